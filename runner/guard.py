"""The lock is never shared: guarding a migration that runs on env.py's own connection.

When env.py migrates on a connection of its own, the migration lock is held by another
session (the runner's). Two things keep a second runner out if that session is lost
(terminated, failover, network) while a revision runs:

- the migrating session holds a second advisory lock, :func:`runner.lock.guard_key`,
  and a runner that takes the migration lock waits until no session holds that one
  (:mod:`runner.lock`): a statement still running for a runner that lost its lock is
  never run alongside;
- :class:`LockGuard` watches the lock from a side session and, the moment the lock
  session no longer holds it, stops the migrating backend (cancel, then terminate: the
  server rolls the revision back), so the run ends at once instead of after the
  revision.

:func:`stop_backends` is also the last resort after a signal (see :mod:`runner.interrupt`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

EVERY_S = 0.1

HELD_SQL = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
            "AND granted)")


def stop_backends(conn: psycopg.Connection[Any], pids: Iterable[int]) -> None:
    """Cancel, then terminate, each backend in ``pids`` (in that order), from ``conn``.
    PostgreSQL rolls back whatever transaction each had open."""
    for pid in pids:
        conn.execute("SELECT pg_cancel_backend(%s), pg_terminate_backend(%s)", (pid, pid))


class LockGuard:
    """Watches, every ``every_s``, that backend ``lock_pid`` still holds an advisory lock;
    when it does not, stops backend ``migration_pid`` and sets :attr:`lost`. The side
    session is opened in the guard's thread. If the side session itself fails, the guard
    ends quietly: the revision's own connection then meets the same outage."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], lock_pid: int,
                 migration_pid: int, every_s: float = EVERY_S) -> None:
        self.lock_pid, self.migration_pid, self.every_s = lock_pid, migration_pid, every_s
        self.lost = False
        self._connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lock-guard")
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(psycopg.Error), self._connect() as conn:
            while not self._stop.wait(self.every_s):
                row = conn.execute(HELD_SQL, (self.lock_pid,)).fetchone()
                if row and not row[0] and not self._stop.is_set():
                    self.lost = True
                    stop_backends(conn, [self.migration_pid])
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
