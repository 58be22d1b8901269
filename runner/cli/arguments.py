"""The command-line arguments of the checklist's commands (``verify``, ``lint``, ``check
--lint``, ``upgrade --dry-run``): argparse only, so the CLI builds them without importing
what the checklist runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Arguments = Callable[[argparse.ArgumentParser], None]


def with_flag(name: str, help_text: str, arguments: Arguments = lambda _p: None) -> Arguments:
    """``arguments`` and an on/off flag ``name``."""

    def add(p: argparse.ArgumentParser) -> None:
        arguments(p)
        p.add_argument(name, action="store_true", help=help_text)

    return add


def checklist_arguments(*, verify: bool) -> Arguments:
    def add(p: argparse.ArgumentParser) -> None:
        if verify:
            p.add_argument("--database-url", help="an empty scratch database (default: start one)")
            p.add_argument(
                "--skip",
                action="append",
                default=[],
                metavar="CHECK",
                help="turn a check off: heads, steps, data, models, lint (repeatable)",
            )
        p.add_argument("--since", metavar="REV", help="lint only the revisions after REV")
        p.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="RULE",
            help="turn a lint rule off (repeatable)",
        )

    return add


def dry_run_flag(arguments: Arguments) -> Arguments:
    """``upgrade``'s arguments and ``--dry-run``."""
    return with_flag(
        "--dry-run",
        "lint what would be applied against the live table sizes; apply nothing",
        arguments,
    )


def phase_flag(arguments: Arguments, help_text: str) -> Arguments:
    """``arguments`` and ``--phase expand|contract``."""

    def add(p: argparse.ArgumentParser) -> None:
        arguments(p)
        p.add_argument("--phase", choices=("expand", "contract"), default=None, help=help_text)

    return add


#: ``check``'s ``--lint``
lint_flag = with_flag("--lint", "also lint the pending revisions against the live table sizes")

#: the checklist's own commands: name -> (help, the verb's arguments, how to parse them)
CHECKLIST = {
    "verify": (
        "the pre-deployment checklist, against a scratch PostgreSQL",
        ("database_url", "skip", "since", "exclude"),
        checklist_arguments(verify=True),
    ),
    "lint": (
        "lint each revision's SQL: squawk and backwards compatibility",
        ("since", "exclude"),
        checklist_arguments(verify=False),
    ),
}
