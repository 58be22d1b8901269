"""Garbage collection for a short-lived process: most of what it allocates (modules, the
migration scripts) lives until it exits, and Python's cyclic collector would otherwise scan
it again and again (a full collection over Alembic, SQLAlchemy and 500 loaded revisions
costs tens of ms; collections during start-up imports are a tenth of a no-op run).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """For a block that allocates what lives until the process exits (imports, loading the
    scripts): no cyclic collections during it, and afterwards everything allocated so far is
    moved out of the collector's sight (``gc.freeze``). Reference counting still frees what
    is dropped; only cycles created in the block outlive it. Safe to nest."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
