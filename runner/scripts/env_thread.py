"""Where env.py runs (``MIGRATION_ENV_PY_THREAD``), for every verb that runs it (upgrade,
downgrade, stamp, verify, lint, check --models): the main thread, as ``alembic upgrade``
runs it (the default); a worker thread; or an AnyIO worker thread, for an env.py whose engine
calls back into an event loop with ``anyio.from_thread.run`` (as the project's own
``migrate`` command does by running ``command.upgrade`` under ``anyio.to_thread.run_sync``).

The main thread stays the one that receives signals: it waits for the worker, and a signal
cancels the statement in flight as usual (:mod:`runner.process.interrupt`); the worker sees
the cancelled statement fail, or :class:`~runner.errors.Interrupted` before its next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

PLACES = ("main", "worker", "anyio_worker")


def call_in(place: str, fn: Callable[[], T]) -> T:
    """``fn()`` run in ``place`` (one of :data:`PLACES`); its result returned, its exception
    raised here."""
    if place == "main":
        return fn()
    if place == "worker":
        return _in_worker(fn)
    if place == "anyio_worker":
        import anyio
        import anyio.to_thread

        return anyio.run(anyio.to_thread.run_sync, fn)
    raise ValueError(f"unknown place {place!r}: expected one of {PLACES}")


def _in_worker(fn: Callable[[], T]) -> T:
    outcome: list[tuple[bool, object]] = []

    def work() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome.append((False, exc))

    worker = threading.Thread(target=work, name="env.py")
    worker.start()
    worker.join()
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]
