"""The lock is never shared: guarding a migration that runs on env.py's own connection.

When env.py migrates on a connection of its own, the migration lock is held by another
session (the runner's). Two things keep a second runner out if that session is lost
(terminated, failover, network) while a revision runs:

- the migrating session holds a second advisory lock, :func:`runner.lock.advisory.guard_key`,
  and a runner that takes the migration lock waits until no session holds that one
  (:mod:`runner.lock.advisory`): a statement still running for a runner that lost its lock is
  never run alongside;
- :class:`LockGuard` watches the lock from a side session and, the moment the lock
  session no longer holds it, stops the migrating backend (cancel, then terminate: the
  server rolls the revision back), so the run ends at once instead of after the
  revision.

:func:`stop_backends` is also the last resort after a signal (see :mod:`runner.process.interrupt`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from runner.errors import ConnectionLost, RunnerError
from runner.lock.advisory import guard_key

EVERY_S = 0.1

HELD_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND granted)"
)


#: opens a side session given its role (``Session.helper_connection``)
Connect = Callable[[str], psycopg.Connection[Any]]


def stop_backends(conn: psycopg.Connection[Any], pids: Iterable[int | None]) -> None:
    """Cancel, then terminate, each backend in ``pids`` (in that order; None skipped), from
    ``conn``. PostgreSQL rolls back whatever transaction each had open."""
    for pid in dict.fromkeys(p for p in pids if p):
        conn.execute("SELECT pg_cancel_backend(%s), pg_terminate_backend(%s)", (pid, pid))


def stop_backends_via(connect: Connect, pids: Iterable[int | None]) -> None:
    """:func:`stop_backends` from a side session of its own."""
    with connect("stop") as side:
        stop_backends(side, pids)


class LockGuard:
    """Watches, every ``every_s``, that backend ``lock_pid`` still holds an advisory lock;
    when it does not, stops backend ``migration_pid`` and sets :attr:`lost`. The side
    session is opened in the guard's thread. If the side session itself fails, the guard
    ends quietly: the revision's own connection then meets the same outage."""

    @classmethod
    def start(
        cls,
        dbapi: Any,
        key: int,
        connect: Connect,
        lock_pid: int,
        migration_pid: int,
        in_transaction: bool = False,
    ) -> LockGuard:
        """Guard env.py's migrating session ``dbapi`` (backend ``migration_pid``): it takes
        the guard key of the lock ``key`` (in autocommit, so that no transaction begins
        before Alembic begins its own; inside the transaction env.py already opened, e.g.
        ``with engine.begin()``, when ``in_transaction``: a session-level advisory lock
        outlives that transaction's rollback), and the guard starts watching."""
        # a literal: drivers differ on the parameter style (asyncpg's is $1)
        take = f"SELECT pg_advisory_lock({int(guard_key(key))})"
        if in_transaction:
            dbapi.cursor().execute(take)
        elif hasattr(dbapi, "autocommit"):
            dbapi.autocommit = True
            try:
                dbapi.cursor().execute(take)
            finally:
                dbapi.autocommit = False
        return cls(connect, lock_pid, migration_pid)

    def __init__(
        self, connect: Connect, lock_pid: int, migration_pid: int, every_s: float = EVERY_S
    ) -> None:
        self.lock_pid, self.migration_pid, self.every_s = lock_pid, migration_pid, every_s
        self.lost = False
        self._connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lock-guard")
        self._thread.start()

    def _run(self) -> None:
        # a side session that cannot be had: the revision's own connection meets the outage
        with contextlib.suppress(psycopg.Error, RunnerError), self._connect("guard") as conn:
            while not self._stop.wait(self.every_s):
                row = conn.execute(HELD_SQL, (self.lock_pid,)).fetchone()
                if row and not row[0] and not self._stop.is_set():
                    self.lost = True
                    stop_backends(conn, [self.migration_pid])
                    return

    @staticmethod
    def error(revision: str | None) -> ConnectionLost:
        """What a run whose guard fired reports."""
        return ConnectionLost(
            f"the session holding the migration lock was lost while revision "
            f"{revision or '(between revisions)'} ran on env.py's own connection: that "
            "revision's backend was stopped at once (cancelled, then terminated), so no other "
            "runner can run it alongside, and PostgreSQL rolled it back. Run again: it resumes "
            "there",
            revision=revision,
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
