"""The command line: parse, set up logging and signals, call one function, map the outcome
to an exit code. Every failure becomes one ``error`` event; every run ends with one
``summary`` event.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runner import __version__, logs
from runner.errors import ExitCode, Interrupted, RunnerError
from runner.interrupt import Interrupt
from runner.lock import lock_key


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migration-runner",
        description="Apply Alembic migrations to PostgreSQL safely (see README for settings).")
    parser.add_argument("--version", action="version", version=f"migration-runner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("upgrade", help="apply pending migrations (default: to head)")
    up.add_argument("target", nargs="?", help="revision to upgrade to (default: MIGRATION_TARGET, "
                    "which defaults to head)")
    demo = sub.add_parser("demo", help="start a throwaway PostgreSQL and race several upgrades at it")
    demo.add_argument("--runners", type=int, default=5, help="how many upgrade processes (default 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from runner.demo import run_demo

        return run_demo(args.runners)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    from runner.settings import load_settings
    from runner.upgrade import Record, upgrade

    logs.configure()
    interrupt = Interrupt()
    interrupt.install()
    record = Record(command=args.command)
    log = logs.get()
    try:
        settings = load_settings()
        logs.configure(settings.migration_log_format, settings.migration_log_level, settings.secrets())
        log = logs.get()
        target = args.target or settings.migration_target
        log.info("start", version=__version__, command=args.command, target=target,
                 lock_key=lock_key(settings.lock_name()), settings=settings.redacted())
        upgrade(settings, target, record=record, interrupt=interrupt, log=log)
        record.exit_code = ExitCode.OK
    except RunnerError as err:
        record.exit_code = err.exit_code
        if isinstance(err, Interrupted):
            record.outcome = "interrupted"
        log.error("error", error_code=err.code, message=err.message, exit_code=int(err.exit_code),
                  **err.fields)
    except Exception as err:  # a bug: one event, traceback only at debug level
        record.exit_code = ExitCode.INTERNAL
        log.error("error", error_code="internal", exit_code=int(ExitCode.INTERNAL),
                  message=f"unexpected {type(err).__name__}: {err}; please report this "
                  "(MIGRATION_LOG_LEVEL=debug shows the traceback)", exc_info=True)
    finally:
        with interrupt.deferred():
            log.info("summary", **record.summary())
            sys.stdout.flush()
    return int(record.exit_code)


if __name__ == "__main__":
    sys.exit(main())
