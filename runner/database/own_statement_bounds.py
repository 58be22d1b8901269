"""Bounds on the runner's own statements (reading the version table and the ledger,
creating the ledger): none may wait forever behind another session's lock.

:func:`bounded` runs a block in a transaction with ``lock_timeout`` and
``statement_timeout`` set for that transaction only (``SET LOCAL``: nothing leaks into a
pooled server session), and turns a wait that hit either into :class:`MigrationBlocked`
(exit 9) naming the sessions that hold locks on the table. Revisions run under their own
limits (:mod:`runner.limits`), not these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runner.database.activity import QUERY_SHOWN, shown_query
from runner.errors import MigrationBlocked, name_sessions

OWN_LOCK_TIMEOUT_S = 10
OWN_STATEMENT_TIMEOUT_S = 60

_LIMITS = (
    f"SELECT set_config('lock_timeout', '{OWN_LOCK_TIMEOUT_S}s', true), "
    f"set_config('statement_timeout', '{OWN_STATEMENT_TIMEOUT_S}s', true)"
)

HOLDERS_SQL = """
SELECT DISTINCT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.state,
       l.mode, round(extract(epoch FROM now() - a.xact_start))::int AS transaction_open_s,
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 2000) AS query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.relation = to_regclass(%s) AND l.granted AND l.pid <> pg_backend_pid()
ORDER BY a.pid
"""


@contextlib.contextmanager
def bounded(conn: psycopg.Connection[Any], table: str) -> Iterator[None]:
    """Run the block in a transaction whose statements wait at most
    ``OWN_LOCK_TIMEOUT_S`` for a lock and run at most ``OWN_STATEMENT_TIMEOUT_S``.
    Raises :class:`MigrationBlocked` naming who holds locks on ``table`` (a qualified
    name) when a statement gave up."""
    try:
        with conn.transaction():
            conn.execute(_LIMITS)
            yield
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        if not gave_up_waiting(exc):
            raise  # cancelled on purpose (a signal): the caller reports that
        holders = lock_holders(conn, table)
        who = name_sessions(
            holders,
            lambda h: (
                f"{h['mode']}, {h['state']}, transaction open "
                f"{h['transaction_open_s']} s, {h['query']!r}"
            ),
        )
        raise MigrationBlocked(
            f"the runner's own statement on {table} gave up after waiting "
            f"({type(exc).__name__}: lock_timeout {OWN_LOCK_TIMEOUT_S} s, statement_timeout "
            f"{OWN_STATEMENT_TIMEOUT_S} s); {table} is locked by {who}. End or shorten that "
            "transaction and run again; nothing was changed",
            table=table,
            blockers=holders,
        ) from None


def gave_up_waiting(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is one of our own limits firing: ``lock_timeout`` (its own SQLSTATE)
    or ``statement_timeout`` (57014, which a deliberate cancel shares: told by its text)."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return True
    return "statement timeout" in (exc.diag.message_primary or "")


def lock_holders(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    """The sessions holding a lock on ``table``, their queries redacted and cut."""
    try:
        rows = conn.cursor(row_factory=dict_row).execute(HOLDERS_SQL, (table,)).fetchall()
    except psycopg.Error:  # only diagnostics: the wait is what gets reported
        return []
    return [shown_query(row, QUERY_SHOWN) for row in rows]
