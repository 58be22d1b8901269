"""Whether a session can hold the migration lock: a session lock protects nothing through a
pooler in transaction mode, where the session that migrates is not the one that locked."""

from __future__ import annotations

from typing import Any

import psycopg

from runner.errors import ConfigError


def pooler_error(seen: str) -> ConfigError:
    """The refusal of a connection through a pooler in transaction mode; ``seen``: how it
    showed."""
    return ConfigError(
        "the database connection goes through a pooler in transaction mode (e.g. PgBouncer "
        f"pool_mode=transaction: {seen}): the migration lock is a session lock and would not "
        "be held by the session that migrates. Point DATABASE_URL/DB_HOST at the database "
        "itself (or a session-mode pool) for migrations",
        pooler="transaction",
    )


def reaches_server_directly(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s socket ends at the PostgreSQL server itself: the server sees this
    session arrive on the address and port the client connected to. Through a pooler or a
    proxy (PgBouncer, RDS Proxy, NAT) they differ; over a unix socket there is no address to
    compare. Only a True answer is a fact: on False, ask :func:`session_is_sticky`."""
    try:
        hostaddr = conn.info.hostaddr
    except psycopg.NotSupportedError:  # libpq older than 12
        return False
    addr, port = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()  # type: ignore[misc]
    return bool(addr) and addr == hostaddr and port == conn.info.port


def session_is_sticky(conn: psycopg.Connection[Any], probe: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` keeps one server session across transactions, as a session advisory
    lock needs. Through a pooler in transaction mode it does not: while ``probe`` holds a
    transaction open, a server session ``conn`` just used is lent to ``probe``, or ``conn``
    moves to another one."""

    def pid(c: psycopg.Connection[Any]) -> int:
        # asked of the server in each transaction: the client's cached ``info.backend_pid``
        # (from the start-up packet) does not change when a pooler lends another session
        row = c.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])

    before = pid(conn)
    probe.autocommit = False
    probe_pid = pid(probe)
    after = pid(conn)
    probe.rollback()  # not in a finally: after a signal mid-query the caller just closes it
    return probe_pid != before and after == before
