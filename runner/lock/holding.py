"""Holding the migration lock on a session: refuse a session that cannot hold it (a
transaction-mode pooler's), wait for it within its budget (reconnecting a waiter whose session
was lost), and release it whatever happens."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg

from runner.database.session import Session
from runner.errors import RunnerError, first_line
from runner.lock.advisory import MigrationLock
from runner.lock.pooler import pooler_error, reaches_server_directly, session_is_sticky
from runner.outcome import Facts
from runner.process.interrupt import Interrupt

PREPARE_THRESHOLD = 5  # psycopg's default


@contextlib.contextmanager
def migration_lock(
    session: Session, name: str, wait_s: float, *, facts: Facts, interrupt: Interrupt
) -> Iterator[MigrationLock]:
    """Hold the migration lock ``name`` on ``session`` for the body, waiting at most
    ``wait_s`` for it.

    On the way out (success, error or signal) the final revision is recorded if still
    unknown (``facts.to_revision`` is None while revisions run), and the lock released.
    Never raises over the error that brought us out: if the session is unusable, closing it
    (which :func:`~runner.database.session.database_session` does) releases the lock.
    """
    _require_own_session(session)
    lock = _acquire(session, name, wait_s, facts)
    try:
        yield lock
    finally:
        with interrupt.deferred():
            _release(session, lock, facts)


def _acquire(session: Session, name: str, budget: float, facts: Facts) -> MigrationLock:
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
            _require_own_session(session)
            continue
        facts.lock_wait_ms = int((time.monotonic() - started) * 1000)
        return lock


def _require_own_session(session: Session) -> None:
    """Refuse a transaction-mode pooler: a session lock there would not protect anything.
    A session that reaches the server directly needs no second connection to show it (a
    herd of runners starting together then holds one connection each, not two)."""
    if reaches_server_directly(session.conn):
        # our own server session: prepared statements are safe, and spare the server
        # parsing the version UPDATE (and a revision's repeated statements) again and again
        session.conn.prepare_threshold = PREPARE_THRESHOLD
        return
    with contextlib.closing(session.helper_connection("probe")) as probe:
        sticky = session_is_sticky(session.conn, probe)
    if not sticky:
        raise pooler_error("another client's transaction ran on this client's server session")
    # through a pooler the probe can miss transaction mode: no server-side prepared
    # statements there (one would be missing on the next server session)


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
