"""Whether a session may hold the migration lock: a session lock protects nothing through a
pooler in transaction mode, where the session that migrates is not the one that locked.

What the runner can know for certain: at start-up the other end of its socket announces a
backend pid (libpq's ``BackendKeyData``, psycopg's ``conn.info.backend_pid``). PostgreSQL
itself announces the pid of the session it started, reached directly or through anything
that passes bytes on unchanged (a TCP tunnel, NAT, a network load balancer); a pooler or a
proxy (PgBouncer in any mode, RDS Proxy) announces a key of its own, since no server session
is yet the client's. Which *mode* a pooler is in, nothing in the protocol says: only the
operator can (``MIGRATION_POOLER=session``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal

from runner.errors import ConfigError

#: what stands between the runner and the server, as declared: ``none`` (the database itself:
#: a pooler is refused), ``session`` (a pooler in session mode: one server session per client
#: connection, for the connection's lifetime)
Pooler = Literal["none", "session"]
#: what the session turned out to be: the server's own, or a declared session-mode pooler's
Reached = Literal["server", "session_pooler"]

SETTING = "MIGRATION_POOLER"
FIX = (
    "Point DATABASE_URL/DB_HOST at the database itself (for RDS Proxy: the DB instance's or "
    "cluster's own endpoint)"
)


def reached(announced_pid: int, server_pid: int, declared: Pooler) -> Reached:
    """What a session reaches, from the pid its other end announced at start-up and the pid
    the server reports for it (``pg_backend_pid()``). Equal: the server itself, whatever was
    declared. Different: a pooler or proxy, which the runner accepts only when it was
    declared to be in session mode; otherwise raises :func:`undeclared_pooler_error`."""
    if announced_pid == server_pid:
        return "server"
    if declared == "session":
        return "session_pooler"
    raise undeclared_pooler_error(announced_pid, server_pid)


def undeclared_pooler_error(announced_pid: int, server_pid: int) -> ConfigError:
    """The refusal of a pooler or proxy nobody declared, before anything is locked."""
    return ConfigError(
        "the database connection goes through a pooler or proxy (PgBouncer, RDS Proxy, ...): "
        f"the other end of the connection announced backend pid {announced_pid} at start-up, "
        f"but the server session is pid {server_pid}. The migration lock is a session lock, "
        "which a pooler in transaction mode would not keep on the session that migrates; "
        f"nothing was locked or written. {FIX}, or, only if the pool is in session mode "
        f"(PgBouncer pool_mode=session), say so with {SETTING}=session",
        pooler="undeclared",
        announced_pid=announced_pid,
        server_pid=server_pid,
    )


def pooler_error(seen: str) -> ConfigError:
    """The refusal of a connection that showed, under the lock, that it goes through a
    pooler in transaction mode; ``seen``: how it showed."""
    return ConfigError(
        "the database connection goes through a pooler in transaction mode (e.g. PgBouncer "
        f"pool_mode=transaction: {seen}): the migration lock is a session lock and would not "
        f"be held by the session that migrates. {FIX} ({SETTING}=session is for a pooler "
        "in session mode only)",
        pooler="transaction",
    )
