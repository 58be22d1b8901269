"""Holding the migration lock on a session: refuse a session that may not hold it (a pooler's,
unless declared in session mode), wait for it within its budget (reconnecting a waiter whose
session was lost), and release it whatever happens."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg

from runner.database.session import Session
from runner.errors import RunnerError, first_line
from runner.lock.advisory import MigrationLock
from runner.lock.pooler import SETTING, Pooler, reached
from runner.outcome import Facts
from runner.process.interrupt import Interrupt

PREPARE_THRESHOLD = 5  # psycopg's default


@contextlib.contextmanager
def migration_lock(
    session: Session,
    name: str,
    wait_s: float,
    pooler: Pooler,
    *,
    facts: Facts,
    interrupt: Interrupt,
) -> Iterator[MigrationLock]:
    """Hold the migration lock ``name`` on ``session`` for the body, waiting at most
    ``wait_s`` for it. First, before any lock statement, refuse a session through a pooler
    or proxy unless ``pooler`` declares one in session mode (:func:`_require_own_session`).

    On the way out (success, error or signal) the final revision is recorded if still
    unknown (``facts.to_revision`` is None while revisions run), and the lock released.
    Never raises over the error that brought us out: if the session is unusable, closing it
    (which :func:`~runner.database.session.database_session` does) releases the lock.
    """
    _require_own_session(session, pooler)
    lock = _acquire(session, name, wait_s, pooler, facts)
    try:
        yield lock
    finally:
        with interrupt.deferred():
            _release(session, lock, facts)


def _acquire(
    session: Session, name: str, budget: float, pooler: Pooler, facts: Facts
) -> MigrationLock:
    """Wait for the lock within ``budget`` seconds. A waiter whose session is lost (a
    failover while it waits: it holds nothing yet) reconnects, within the wait budget, and
    waits on for what is left of its lock budget."""
    started = time.monotonic()
    while True:
        lock = MigrationLock(session.conn, name, session.log)
        try:
            lock.acquire(max(0.0, budget - (time.monotonic() - started)))
        except psycopg.OperationalError as exc:
            if not (session.conn.closed or session.conn.broken):
                raise
            session.log.warning(
                "lock.reconnecting",
                lock=lock.name,
                error=first_line(exc),
                detail="the waiting session was lost; it held nothing yet",
            )
            session.reconnect()
            _require_own_session(session, pooler)
            continue
        facts.lock_wait_ms = int((time.monotonic() - started) * 1000)
        return lock


def _require_own_session(session: Session, pooler: Pooler) -> None:
    """Raise :func:`~runner.lock.pooler.undeclared_pooler_error` unless ``session`` is the
    server's own (or a pooler declared in session mode): one query on the session itself, no
    second connection (a check that needed one would wait for itself in a pool of one)."""
    conn = session.conn
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    announced = conn.info.backend_pid
    if reached(announced, int(row[0]), pooler) == "server":
        # our own server session: prepared statements are safe, and spare the server
        # parsing the version UPDATE (and a revision's repeated statements) again and again
        conn.prepare_threshold = PREPARE_THRESHOLD
        return
    # trusted as declared, without server-side prepared statements: were the pool in
    # transaction mode after all, the next transaction's server session would not have them
    session.log.info(
        "lock.through_pooler",
        pooler=pooler,
        announced_pid=announced,
        server_pid=int(row[0]),
        detail=f"{SETTING}={pooler}: the lock is taken through the pooler",
    )


def _release(session: Session, lock: MigrationLock, facts: Facts) -> None:
    try:
        if facts.to_revision is None and lock.session_usable():
            with contextlib.suppress(psycopg.Error, RunnerError):  # never over what brought us out
                facts.to_revision = list(session.revision())
        lock.release()
    except psycopg.Error as exc:
        lock.log.warning(
            "lock.release_failed",
            lock=lock.name,
            error=type(exc).__name__,
            detail="closing the session; PostgreSQL releases the lock with it",
        )
