"""Is env.py migrating the database the runner holds its lock on?

An env.py may ignore both the runner's connection and ``sqlalchemy.url`` and connect where
its own settings say. Before the first revision runs on a connection the runner did not hand
out, the runner compares it with the lock session: the database name, the server's address
and port, the cluster's system identifier (``pg_control_system()``, where the role may call
it), and — conclusive on its own — whether the migrating connection sees the lock session's
advisory lock in ``pg_locks`` of its current database. Only these catalog reads are sent, on
the DB-API connection directly, and any transaction they begin is rolled back, so Alembic
still gives each revision a transaction of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from runner.errors import ConfigError

IDENTITY_SQL = (
    "SELECT current_database(), host(inet_server_addr()), inet_server_port(), "
    "has_function_privilege('pg_control_system()', 'EXECUTE')"
)
SYSTEM_ID_SQL = "SELECT system_identifier::text FROM pg_control_system()"
SEES_LOCK_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = {pid:d} AND database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()))"
)


@dataclasses.dataclass(frozen=True)
class SessionLocation:
    """Where a session is: its database, the server address and port it reached (None over
    a unix socket), and the cluster's system identifier (None when not permitted)."""

    database: str
    address: str | None
    port: int | None
    system_identifier: str | None

    def describe(self) -> str:
        server = f"{self.address}:{self.port}" if self.address else "a local socket"
        system = f", system {self.system_identifier}" if self.system_identifier else ""
        return f"database {self.database!r} on {server}{system}"


def identify(dbapi_connection: Any, end_transaction: bool = True) -> SessionLocation:
    """The identity of a DB-API connection of any driver. ``end_transaction``: roll back
    the transaction these reads begin (false when the caller's own transaction is open)."""
    database, address, port, permitted = _one(dbapi_connection, IDENTITY_SQL, end_transaction)
    system = _one(dbapi_connection, SYSTEM_ID_SQL, end_transaction)[0] if permitted else None
    return SessionLocation(database, address, port, system)


def sees_lock(dbapi_connection: Any, lock_pid: int, end_transaction: bool = True) -> bool:
    """Whether the lock session's advisory lock (held by ``lock_pid``) is visible from this
    connection, in its current database: then both are on the same server and database."""
    return bool(_one(dbapi_connection, SEES_LOCK_SQL.format(pid=int(lock_pid)), end_transaction)[0])


def mismatch(lock: SessionLocation, migrating: SessionLocation, sees_the_lock: bool) -> str | None:
    """None when the migrating connection is on the lock session's database; else why not.
    The visible lock decides; system identifiers, when both are known, must agree too."""
    both_known = lock.system_identifier is not None and migrating.system_identifier is not None
    if (
        sees_the_lock
        and lock.database == migrating.database
        and (not both_known or lock.system_identifier == migrating.system_identifier)
    ):
        return None
    return (
        f"env.py migrates {migrating.describe()}, but the runner holds the migration lock on "
        f"{lock.describe()}"
    )


def require_same_database(
    lock: SessionLocation, lock_pid: int, dbapi_connection: Any, end_transaction: bool = True
) -> None:
    """Raise :class:`ConfigError` (nothing applied yet) if ``dbapi_connection`` is not on the
    lock session's database."""
    migrating = identify(dbapi_connection, end_transaction)
    problem = mismatch(lock, migrating, sees_lock(dbapi_connection, lock_pid, end_transaction))
    if problem:
        raise ConfigError(
            f"{problem}: the lock would not protect the migrations. Make env.py use the "
            "connection in config.attributes['connection'] or the URL in sqlalchemy.url, or "
            "point DATABASE_URL / DB_* at the database env.py migrates; nothing was applied",
            lock_database=lock.describe(),
            migration_database=migrating.describe(),
        )


def _one(dbapi_connection: Any, statement: str, end_transaction: bool) -> tuple[Any, ...]:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
        row = cursor.fetchone()
    finally:
        cursor.close()
        if end_transaction and not getattr(dbapi_connection, "autocommit", False):
            dbapi_connection.rollback()
    return tuple(row)
