"""The process entry point (``migration-runner``, ``python -m runner``): imports what every
run needs with the garbage collector held back (see :mod:`runner.heap`), then runs."""

from __future__ import annotations

from typing import NoReturn

from runner.heap import long_lived


def main() -> NoReturn:
    with long_lived():
        import runner.commands  # noqa: F401  (what every run needs: pydantic, psycopg)
        import runner.settings  # noqa: F401
        from runner.cli import entry
    entry()
