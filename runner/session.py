"""The database session every command works through, and the migration lock on it.

:func:`database_session` waits for a writable database (retries, budgets) and yields a
:class:`Session`; :func:`migration_lock` checks that the session is really ours (not a
transaction-mode pooler's), takes the advisory lock on it, and releases it whatever happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from runner import __version__, connect
from runner.errors import ConfigError, ConnectionLost, RunnerError, first_line
from runner.identity import application_name, where_am_i
from runner.interrupt import Interrupt
from runner.ledger import Ledger
from runner.lock import MigrationLock
from runner.record import Facts
from runner.settings import ConnectionSpec, Settings
from runner.version_table import VersionTable, read_revision


@dataclasses.dataclass
class Session:
    conn: psycopg.Connection[Any]
    spec: ConnectionSpec
    settings: Settings
    #: where this runner runs: ``task/<ECS task id>`` or the host name
    where: str
    log: Any

    @property
    def application_name(self) -> str:
        return application_name(self.where)

    @property
    def table(self) -> VersionTable:
        return VersionTable(self.settings.migration_version_table,
                            self.settings.migration_version_table_schema)

    def revision(self) -> tuple[str, ...]:
        return read_revision(self.conn, self.table)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.settings.migration_ledger_table,
                      self.settings.migration_version_table_schema, __version__, self.where)

    def helper_connection(self, role: str) -> psycopg.Connection[Any]:
        """A further session, with the same classification of failures and the same wait
        budget as the first (under load, ``too many clients`` is as transient for a probe
        as for the first connection)."""
        return _connect(self.settings, self.spec, f"{self.application_name} {role}"[:63],
                        self.log, role).conn

    def reconnect(self) -> None:
        """Replace a lost session (a lock waiter's, before it holds anything) with a new
        one, within the wait budget. The old one is closed."""
        self.conn.close()
        self.conn = _connect(self.settings, self.spec, self.application_name, self.log).conn


def _connect(settings: Settings, spec: ConnectionSpec, application_name: str, log: Any,
             role: str = "session") -> connect.Connected:
    return connect.wait_for_database(
        spec, budget_s=settings.migration_db_wait_timeout,
        connect_timeout_s=settings.migration_connect_timeout,
        max_interval_s=settings.migration_retry_max_interval,
        application_name=application_name, log=log, role=role)


@contextlib.contextmanager
def database_session(settings: Settings, *, facts: Facts, log: Any) -> Iterator[Session]:
    """Wait for the database and yield a session on it; closed on exit."""
    spec = settings.connection_spec()
    where = where_am_i(settings.ecs_container_metadata_uri_v4)
    try:
        connected = _connect(settings, spec, application_name(where), log)
    except RunnerError as failed:
        facts.connect_attempts = int(failed.fields.get("attempts", 0))  # type: ignore[call-overload]
        raise
    facts.connect_attempts = connected.attempts
    session = Session(connected.conn, spec, settings, where, log)
    try:
        yield session
    except psycopg.OperationalError as exc:  # the session died outside a revision
        raise ConnectionLost(
            f"the connection to the database was lost ({first_line(exc)}); "
            "no revision was in flight. Run again", error_class=type(exc).__name__) from None
    finally:
        session.conn.close()


PREPARE_THRESHOLD = 5  # psycopg's default


@contextlib.contextmanager
def migration_lock(session: Session, *, facts: Facts, interrupt: Interrupt) -> Iterator[MigrationLock]:
    """Hold the migration lock on ``session`` for the body.

    On the way out (success, error or signal) the final revision is recorded if still
    unknown (``facts.to_revision`` is None while revisions run), and the lock released. Never raises over the error that brought us out: if the
    session is unusable, closing it (which :func:`database_session` does) releases the lock.
    """
    _require_own_session(session)
    lock = _acquire(session, facts)
    try:
        yield lock
    finally:
        with interrupt.deferred():
            _release(session, lock, facts)


def _acquire(session: Session, facts: Facts) -> MigrationLock:
    """Wait for the lock within MIGRATION_LOCK_WAIT_TIMEOUT. A waiter whose session is lost
    (a failover while it waits: it holds nothing yet) reconnects, within the wait budget,
    and waits on for what is left of its lock budget."""
    budget = session.settings.migration_lock_wait_timeout
    started = time.monotonic()
    while True:
        lock = MigrationLock(session.conn, session.settings.lock_name(), session.log)
        try:
            lock.acquire(max(0.0, budget - (time.monotonic() - started)))
        except psycopg.OperationalError as exc:
            if not (session.conn.closed or session.conn.broken):
                raise
            session.log.warning("lock.reconnecting", lock=lock.name, error=first_line(exc),
                                detail="the waiting session was lost; it held nothing yet")
            session.reconnect()
            _require_own_session(session)
            continue
        facts.lock_wait_ms = int((time.monotonic() - started) * 1000)
        return lock


def _require_own_session(session: Session) -> None:
    """Refuse a transaction-mode pooler: a session lock there would not protect anything.
    A session that reaches the server directly needs no second connection to show it (a
    herd of runners starting together then holds one connection each, not two)."""
    if not connect.reaches_server_directly(session.conn):
        with contextlib.closing(session.helper_connection("probe")) as probe:
            sticky = connect.session_is_sticky(session.conn, probe)
        if not sticky:
            raise ConfigError(
                "the database connection goes through a pooler in transaction mode (e.g. "
                "PgBouncer pool_mode=transaction): the migration lock is a session lock and would "
                "not be held by the session that migrates. Point DATABASE_URL/DB_HOST at the "
                "database itself (or a session-mode pool) for migrations", pooler="transaction")
    # our own session now: server-side prepared statements are safe, and spare the server
    # parsing the version UPDATE (and a revision's repeated statements) again and again
    session.conn.prepare_threshold = PREPARE_THRESHOLD


def _release(session: Session, lock: MigrationLock, facts: Facts) -> None:
    try:
        if facts.to_revision is None and lock.session_usable():
            with contextlib.suppress(psycopg.Error, RunnerError):  # never over what brought us out
                facts.to_revision = list(session.revision())
        lock.release()
    except psycopg.Error as exc:
        lock.log.warning("lock.release_failed", lock=lock.name, error=type(exc).__name__,
                         detail="closing the session; PostgreSQL releases the lock with it")
