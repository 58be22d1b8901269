"""The command line: parse, set up logging and signals, call one verb, map the outcome to an
exit code. Every failure becomes one ``error`` event; every run ends with one ``summary``
event. Writing verbs log to stdout (what ECS ships to CloudWatch); verbs that print a result
(``current``, ``history``, ``sql`` ...) print it on stdout and log to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from runner import __version__, logs
from runner.errors import ConfigError, ExitCode, Interrupted, RunnerError
from runner.interrupt import Interrupt
from runner.lock import lock_key

WRITING = ("upgrade", "downgrade", "stamp")


class UsageError(ConfigError):
    code = "usage"


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line like any other failure (an error event and a summary)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see migration-runner --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="migration-runner",
        description="Apply Alembic migrations to PostgreSQL safely (see README for settings).")
    parser.add_argument("--version", action="version", version=f"migration-runner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, *, json_flag: bool = False) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        if json_flag:
            command.add_argument("--json", action="store_true", help="print one JSON document")
        return command

    add("upgrade", "apply pending migrations (pnpm db:migrate)").add_argument(
        "target", nargs="?", help="revision (default: MIGRATION_TARGET, which defaults to head)")
    add("downgrade", "roll back, under the lock (pnpm db:migrate:down)").add_argument(
        "target", help="-1 (one step), -N, a revision id, or base: required, never implied")
    add("stamp", "set the version without running migrations, under the lock").add_argument(
        "target", help="a revision id, head, or base")
    add("current", "the database's revision and whether it is at head (pnpm db:status)",
        json_flag=True)
    add("check", "exit 0 only if the database is exactly at head (CI gate, readiness)",
        json_flag=True)
    add("history", "the migration timeline, marking what is applied (pnpm db:history)",
        json_flag=True)
    add("heads", "the scripts' heads; an error if more than one", json_flag=True)
    add("manifest", "write the scripts' manifest (at image build time: makes no-op runs fast)",
        json_flag=True)
    add("sql", "print the SQL an upgrade would run, without connecting").add_argument(
        "span", nargs="?", default="head", help="[FROM:]TO (default: head, from an empty database)")
    add("merge", "write a revision merging every head").add_argument(
        "-m", "--message", required=True)
    revision = add("revision", "write a new revision file (pnpm db:migrate:create)")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", action="store_true",
                          help="diff the models against the database (needs its settings)")
    add("ecs", "ecs run: run the migration as a one-off ECS task and wait for it ([aws] extra)")
    add("demo", "start a throwaway PostgreSQL and race several upgrades at it").add_argument(
        "--runners", type=int, default=5, help="how many upgrade processes (default 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["ecs"]:  # the ECS launcher (runner/ecs): no database settings needed
        from runner.ecs.cli import main as ecs_main
        return ecs_main(words[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        parser.print_usage(sys.stderr)
        logs.configure()
        record_usage_error(err)
        return int(err.exit_code)
    if args.command == "demo":
        return _demo(args.runners)
    return run_command(args)


def _demo(runners: int) -> int:
    """The demo lives in the repository's ``devtools`` (never in the image or the wheel)."""
    try:
        from devtools.demo import run_demo
    except ImportError:
        print("migration-runner demo: runs from a checkout of the repository only "
              "(uv run migration-runner demo, at its root)", file=sys.stderr)
        return int(ExitCode.CONFIG)
    return run_demo(runners)


def run_command(args: argparse.Namespace) -> int:
    from runner.record import Record
    from runner.settings import load_settings

    log_stream = sys.stdout if args.command in WRITING else sys.stderr
    logs.configure(stream=log_stream)
    interrupt = Interrupt()
    interrupt.install()
    record = Record(command=args.command)
    log = logs.get()
    try:
        settings = load_settings()
        logs.configure(settings.migration_log_format, settings.migration_log_level,
                       settings.secrets(), stream=log_stream)
        log = logs.get()
        log.info("start", version=__version__, command=args.command,
                 lock_key=lock_key(settings.lock_name()), settings=settings.redacted())
        report = _dispatch(args, settings, record, interrupt, log)
        if report is not None:
            print(json.dumps(report.document, indent=2, default=str) if getattr(args, "json", False)
                  else report.text, flush=True)
            record.exit_code = report.exit_code
            if record.outcome == "failed" and report.exit_code == ExitCode.OK:
                record.outcome = "ok"
        else:
            record.exit_code = ExitCode.OK
    except RunnerError as err:
        record.exit_code = err.exit_code
        if isinstance(err, Interrupted):
            record.outcome = "interrupted"
        _log_error(log, err)
    except Exception as err:  # a bug: one event, traceback only at debug level
        record.exit_code = ExitCode.INTERNAL
        log.error("error", error_code="internal", exit_code=int(ExitCode.INTERNAL),
                  message=f"unexpected {type(err).__name__}: {err}; please report this "
                  "(MIGRATION_LOG_LEVEL=debug shows the traceback)", exc_info=True)
    finally:
        with interrupt.deferred():
            log.info("summary", **record.summary())
            log_stream.flush()
            # the run is over and said so: a late SIGTERM must not turn exit 0 into 143
            # (Python restores the default action while it shuts down, unless ignored)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return int(record.exit_code)


def record_usage_error(err: UsageError) -> None:
    from runner.record import Record

    log = logs.get()
    _log_error(log, err)
    log.info("summary", **Record(command="usage", exit_code=err.exit_code).summary())


def _log_error(log: Any, err: RunnerError) -> None:
    """The one ``error`` event of a failed run."""
    log.error("error", error_code=err.code, message=err.message, exit_code=int(err.exit_code),
              **err.fields)


def _dispatch(args: argparse.Namespace, settings: Any, record: Any, interrupt: Interrupt,
              log: Any) -> Any:
    from runner import commands

    command = args.command
    if command == "upgrade":
        return commands.upgrade(settings, args.target or settings.migration_target, record=record,
                                interrupt=interrupt, log=log)
    if command in ("downgrade", "stamp"):
        return getattr(commands, command)(settings, args.target, record=record,
                                          interrupt=interrupt, log=log)
    if command in ("current", "check", "history"):
        return getattr(commands, command)(settings, record=record, log=log)
    if command == "manifest":
        return commands.write_manifest(settings, log=log)
    if command == "heads":
        return commands.heads(settings, log=log)
    if command == "sql":
        return commands.sql(settings, args.span, log=log)
    if command == "merge":
        return commands.merge(settings, args.message, log=log)
    return commands.revision(settings, args.message, args.autogenerate, record=record, log=log)


def entry() -> NoReturn:
    """Run the command line for the process (see :mod:`runner.start`), then end
    without Python's interpreter teardown, which finalises some 500 imported modules (tens
    of ms on every deploy) and has nothing left to do: every connection is closed and every
    stream is flushed here. ``main`` stays an ordinary function for callers in-process."""
    code = main()
    logs.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the exit code still tells
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
