"""The connection migrations run on, whatever the driver the URL names.

- psycopg 3 (the default): env.py is handed the runner's locked session itself.
- psycopg2, asyncpg, psycopg's async mode: env.py is handed a connection of that driver
  (revisions behave as under plain Alembic); the lock stays on the runner's psycopg 3 session,
  alongside, checked before each revision. Async drivers run synchronously through
  :mod:`runner.execution.async_bridge`, so an env.py may still call ``asyncio.run`` itself.

Whatever connection env.py finally migrates on (the one handed, or one of its own), the
runner learns its backend pid, how to cancel its statement from another thread, and — when it
is not the locked session — checks that it is on the locked session's database
(:mod:`runner.lock.same_database`) before the first revision, and guards it (:mod:`runner.lock.guard`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg

from runner.config.drivers import Canceller, Driver, backend_pid
from runner.database.connect import KEEPALIVES
from runner.errors import ConnectionLost
from runner.execution import async_bridge
from runner.lock import same_database
from runner.lock.guard import LockGuard

T = TypeVar("T")

#: drivers whose cursor may send ``INSERT ...; COMMIT`` in one message (simple protocol,
#: and a connection object that tolerates a COMMIT it did not send)
PIPELINES_COMMIT = ("psycopg", "psycopg2")


def engine_for(driver: Driver, url: str, creator: Callable[[], Any]) -> Any:
    """The engine env.py's connection comes from: the runner's locked session for psycopg 3
    (``creator``), else new connections of ``driver`` to ``url`` (a secret). Its connections
    are :func:`lending` ones."""
    from sqlalchemy import create_engine, pool

    if driver.name == "psycopg":
        engine = create_engine("postgresql+psycopg://", creator=creator)
    else:
        # libpq drivers: the keepalives of the runner's own sessions (a dead peer is noticed)
        connect_args = dict(KEEPALIVES) if driver.module in ("psycopg", "psycopg2") else {}
        if driver.is_async:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(
                url, poolclass=pool.NullPool, connect_args=connect_args
            ).sync_engine
        else:
            engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    engine._connection_cls = lending()
    return engine


@contextlib.contextmanager
def lent(engine: Any) -> Iterator[Any]:
    """The connection handed to env.py (one of ``engine``'s :func:`lending` ones), closed at
    the end however many times env.py borrowed it without giving it back."""
    connection = engine.connect()
    try:
        yield connection
    finally:
        connection._lent = 0
        connection.close()


@functools.cache
def lending() -> type:
    """A SQLAlchemy ``Connection`` that is also a connectable whose only connection is
    itself, for the cookbook's older env.py (``connectable = config.attributes.get(
    "connection") or engine_from_config(...)``, then ``with connectable.connect() as
    connection:``). ``connect()`` lends the same connection (the locked session, or the one
    the lock guard watches) and the matching ``close()`` (the ``with`` block's end) only
    returns it: the runner closes it. Nothing else changes, so every guarantee holds."""
    from sqlalchemy.engine import Connection

    class LentConnection(Connection):
        _lent = 0

        def connect(self) -> LentConnection:
            self._lent += 1
            return self

        def close(self) -> None:
            if self._lent:
                self._lent -= 1
                return
            super().close()

    return LentConnection


def run(driver: Driver, body: Callable[[], T]) -> T:
    """``body()``, where ``driver``'s connections work synchronously."""
    if not driver.is_async:
        return body()
    loop = async_bridge.new_loop()
    try:
        return async_bridge.run_sync(body, loop)
    finally:
        loop.close()


@dataclasses.dataclass
class Migrating:
    """What the runner knows of the connection env.py migrates on."""

    pid: int
    cancel: Canceller
    #: not the locked session: the lock is held alongside
    separate: bool
    guard: LockGuard | None = None

    def close(self) -> None:
        if self.guard is not None:
            self.guard.stop()
        self.cancel.close()


def adopt(
    migration: Any,
    lock_conn: psycopg.Connection[Any],
    separate: bool,
    open_session: Callable[[str], Any],
    lock_key: int | None,
) -> Migrating:
    """Learn about ``migration`` (the SQLAlchemy connection env.py configured); when it is
    ``separate`` from the locked session ``lock_conn``, refuse it (``ConfigError``) unless it
    is on the same database (a few catalog reads, their transaction rolled back unless env.py
    has one open), then guard it with the lock ``lock_key``'s guard key. The pid comes from
    the driver where it knows it (all four do)."""
    record = migration.connection
    pid = backend_pid(record.driver_connection, record.dbapi_connection)
    migrating = Migrating(
        pid, Canceller(record.driver_connection, pid, lambda: open_session("cancel")), separate
    )
    if separate:
        same_database.require_same_database(
            same_database.identify(lock_conn),
            lock_conn.info.backend_pid,
            record.dbapi_connection,
            end_transaction=not migration.in_transaction(),
        )
        if lock_key is not None:
            migrating.guard = LockGuard.start(
                record.dbapi_connection,
                lock_key,
                open_session,
                lock_conn.info.backend_pid,
                pid,
                in_transaction=migration.in_transaction(),
            )
    return migrating


def check_lock_session(lock_conn: psycopg.Connection[Any], revision: str) -> None:
    """Raise :class:`ConnectionLost` unless the session holding the lock still answers."""
    try:
        lock_conn.execute("SELECT 1")
        if not lock_conn.autocommit:
            lock_conn.commit()
    except psycopg.Error:
        raise ConnectionLost(
            f"the session holding the migration lock was lost; stopped before "
            f"revision {revision} so that no other runner can interleave. Run "
            "again",
            revision=revision,
        ) from None
