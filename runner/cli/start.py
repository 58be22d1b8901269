"""The process entry point (``migration-runner``, ``python -m runner``): imports what every
run needs with the garbage collector held back (see :mod:`runner.process.gc_freeze`), then runs."""

from __future__ import annotations

from typing import NoReturn

from runner.process.interrupt import record_early

record_early()  # first: a SIGTERM during the imports below still ends with a summary (130)

import contextlib  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from runner.process.gc_freeze import long_lived  # noqa: E402

#: pydantic's documented switch: no plugin for the models built while it is set
PLUGINS_OFF = "PYDANTIC_DISABLE_PLUGINS"


@contextlib.contextmanager
def without_pydantic_plugins() -> Iterator[None]:
    """Pydantic plugins off while the runner's own models are built (its settings, and
    pydantic-settings' at import): they need none, a plugin would see the database
    password they validate, and finding plugins reads every installed distribution's
    metadata (``importlib.metadata.entry_points``: about 2 ms of CPU with the runner's 17
    distributions, more beside a service's dependencies). The
    variable is restored afterwards, so the project's models (env.py) and an app started
    by ``--then`` get their plugins as before; a value set by the user is left alone."""
    if PLUGINS_OFF in os.environ:
        yield
        return
    os.environ[PLUGINS_OFF] = "__all__"
    try:
        yield
    finally:
        os.environ.pop(PLUGINS_OFF, None)


def main() -> NoReturn:
    with long_lived(), without_pydantic_plugins():
        import runner.commands.migrate
        import runner.config.settings  # noqa: F401
        from runner.cli.main import entry
    entry()
