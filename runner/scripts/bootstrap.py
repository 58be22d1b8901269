"""The project's bootstrap (``MIGRATION_BOOTSTRAP=module:callable``): what its own
``migrate`` command does before Alembic (``configure()``, settings, logging, a registry of
models), run once per process before env.py or any revision is imported.

Plain ``alembic upgrade`` never calls it: a project that needs it has its own wrapper, and this
setting replaces that wrapper.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from runner.errors import ConfigError, Interrupted

_done: set[str] = set()


def resolve(spec: str) -> Callable[[], Any]:
    """The callable ``spec`` names, its module imported. Raises :class:`ConfigError` naming
    what is missing (a module not found, an attribute absent, not callable) or what the
    module raised at import."""
    module_name, _, attribute = spec.partition(":")  # its form checked with the settings
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"MIGRATION_BOOTSTRAP {spec!r}: no module named {exc.name!r} (is the project's "
            "package installed, or its directory on PYTHONPATH?)"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"MIGRATION_BOOTSTRAP {spec!r}: importing {module_name} raised "
            f"{type(exc).__name__}: {exc}"
        ) from None
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise ConfigError(f"MIGRATION_BOOTSTRAP {spec!r}: {module_name} has no {attribute}")
        target = getattr(target, name)
    if not callable(target):
        raise ConfigError(f"MIGRATION_BOOTSTRAP {spec!r}: {attribute} is not callable")
    return target  # type: ignore[no-any-return]


def run_bootstrap(spec: str | None) -> None:
    """Call the bootstrap ``spec`` names, once per process (None: nothing to do). Raises
    :class:`ConfigError` when it cannot be found, or when it raises (the project's own
    ``migrate`` command would fail the same way)."""
    if spec is None or spec in _done:
        return
    fn = resolve(spec)
    try:
        fn()
    except Interrupted:  # a signal while it ran: the run stops as for any signal (130)
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # the project's, not ours
        raise ConfigError(
            f"MIGRATION_BOOTSTRAP {spec!r} raised {type(exc).__name__}: {exc}; no revision "
            "ran. Fix the project's configuration (its own migrate "
            "command fails the same way)"
        ) from None
    _done.add(spec)
