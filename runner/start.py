"""The process entry point (``migration-runner``, ``python -m runner``): imports what every
run needs with the garbage collector held back (see :mod:`runner.heap`), then runs."""

from __future__ import annotations

from typing import NoReturn

from runner.interrupt import record_early

record_early()  # first: a SIGTERM during the imports below still ends with a summary (130)

from runner.heap import long_lived  # noqa: E402


def main() -> NoReturn:
    with long_lived():
        import runner.commands  # noqa: F401  (what every run needs: pydantic, psycopg)
        import runner.settings  # noqa: F401
        from runner.cli import entry
    entry()
