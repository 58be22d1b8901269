"""The process entry point (``migration-runner``, ``python -m runner``): imports what every
run needs with the garbage collector held back (see :mod:`runner.process.gc_freeze`), then runs."""

from __future__ import annotations

from typing import NoReturn

from runner.process.interrupt import record_early

record_early()  # first: a SIGTERM during the imports below still ends with a summary (130)

from runner.process.gc_freeze import long_lived  # noqa: E402


def main() -> NoReturn:
    with long_lived():
        import runner.commands.migrate
        import runner.config.settings  # noqa: F401
        from runner.cli.main import entry
    entry()
