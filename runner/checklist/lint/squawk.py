"""squawk's rules (the ``squawk-cli`` wheel, an optional extra) over each revision's SQL.

Each revision's statements go into a file of their own, one per line range, so each squawk
finding maps back to its revision and statement, and so to the line in the revision file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.checklist.lint.sql import Statement
from runner.errors import ConfigError

#: the runner sets lock_timeout (MIGRATION_DDL_LOCK_TIMEOUT) and statement_timeout on every
#: revision itself: a revision need not
DEFAULT_EXCLUDE = ("require-lock-timeout", "require-statement-timeout")


@dataclasses.dataclass(frozen=True)
class SquawkHit:
    revision: str
    statement: int  # index into that revision's statements
    rule: str
    level: str  # error or warning
    message: str
    help: str


def squawk_binary() -> str:
    """The squawk executable: beside this Python (a venv's bin), or on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found: str | None = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        raise ConfigError(
            "lint needs squawk: install the `lint` extra "
            "(pip install 'migration-runner[lint]'), or skip its rules"
        )
    return found


def run_squawk(
    statements: Mapping[str, list[Statement]], exclude: tuple[str, ...] = DEFAULT_EXCLUDE
) -> list[SquawkHit]:
    """squawk over each revision's statements (``revision -> statements``): one process a
    revision, reading the SQL on its stdin, so that nothing is written anywhere (the image's
    root filesystem is read-only, often without a tmpfs)."""
    binary = squawk_binary()
    hits: list[SquawkHit] = []
    for revision, stmts in statements.items():
        starts, text = [], ""
        for stmt in stmts:
            starts.append(text.count("\n"))
            text += stmt.sql + ";\n"
        if text:
            found = _squawk(binary, text, f"{revision}.sql", exclude)
            hits.extend(_hit(revision, starts, item) for item in found)
    return hits


def _squawk(binary: str, sql: str, name: str, exclude: tuple[str, ...]) -> list[dict[str, Any]]:
    args = [binary, "--reporter", "json", f"--stdin-filepath={name}"]
    args += [f"--exclude={rule}" for rule in exclude]
    proc = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=120)
    try:
        found = json.loads(proc.stdout or "[]")
    except ValueError:
        found = None
    if proc.returncode not in (0, 1) or not isinstance(found, list):
        raise ConfigError(
            f"squawk failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    return found


def _hit(revision: str, starts: list[int], item: dict[str, Any]) -> SquawkHit:
    """A squawk finding on the statement of ``revision`` it falls in (``starts``: the first
    line of each statement in the text squawk read)."""
    index = sum(1 for start in starts if start <= item["line"]) - 1
    return SquawkHit(
        revision,
        max(index, 0),
        item["rule_name"],
        "error" if str(item["level"]).lower() == "error" else "warning",
        item["message"],
        item.get("help") or "",
    )
