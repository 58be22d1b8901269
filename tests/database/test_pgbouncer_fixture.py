"""The PgBouncer test helper (tests/support/pgbouncer.py) does what it says, against a real PgBouncer.

Session mode pins one server backend to one client connection; transaction mode hands a
backend to whichever client starts a transaction, so a client is not stuck to one backend.
The probe in ``_handoff_probe`` is the property the runner relies on to detect a
transaction pooler.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tests.support import pgbouncer as pgb
from tests.support.helpers import Database, wait_until

LOCK_KEY = 0x6D6967  # arbitrary


@pytest.fixture
def pgbouncer_session(database: Database, tmp_path: Path) -> Iterator[pgb.PgBouncer]:
    yield from pgb.pgbouncer_session(database, tmp_path)


@pytest.fixture
def pgbouncer_transaction(database: Database, tmp_path: Path) -> Iterator[pgb.PgBouncer]:
    yield from pgb.pgbouncer_transaction(database, tmp_path)


def pid(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]


def _handoff_probe(bouncer: pgb.PgBouncer, dbname: str) -> tuple[int, int, int]:
    """A: pid (autocommit); B: BEGIN + pid, left open; A: pid again. -> (a1, b, a2)."""
    with bouncer.connect(dbname) as a, bouncer.connect(dbname, autocommit=False) as b:
        a1 = pid(a)
        b_pid = pid(b)  # psycopg opens the transaction implicitly (autocommit=False)
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        a2 = pid(a)
        b.rollback()
    return a1, b_pid, a2


def test_session_mode_pins_one_backend_per_client(
    pgbouncer_session: pgb.PgBouncer, database: Database
) -> None:
    with pgbouncer_session.connect(database.name) as conn:
        assert conn.execute("SHOW transaction_isolation").fetchone() is not None
        first, second = pid(conn), pid(conn)
        assert first == second
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        holders = database.query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = %s AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
            (LOCK_KEY, database.name),
        )
        assert holders == [(first,)]
        with pgbouncer_session.connect(database.name) as other:
            assert pid(other) != first
            assert other.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone() == (
                False,
            )
        assert pid(conn) == first
    # closing the client connection releases the lock: PgBouncer resets the server
    # connection with DISCARD ALL (session mode), asynchronously to the client's close
    wait_until(lambda: database.advisory_locks() == 0, timeout=5, what="DISCARD ALL")


def test_session_mode_probe_sees_no_handoff(
    pgbouncer_session: pgb.PgBouncer, database: Database
) -> None:
    a1, b, a2 = _handoff_probe(pgbouncer_session, database.name)
    assert b != a1
    assert a2 == a1


def test_transaction_mode_probe_sees_handoff(
    pgbouncer_transaction: pgb.PgBouncer, database: Database
) -> None:
    a1, b, a2 = _handoff_probe(pgbouncer_transaction, database.name)
    assert b == a1 or a2 != a1, (a1, b, a2)


def test_transaction_mode_breaks_psycopg_prepared_statements(
    pgbouncer_transaction: pgb.PgBouncer, database: Database
) -> None:
    """The gotcha the module docstring warns about, and its fix (prepare_threshold=None)."""
    query = "SELECT pg_backend_pid()"
    with (
        pgbouncer_transaction.connect(database.name) as a,
        pgbouncer_transaction.connect(database.name, autocommit=False) as b,
    ):
        for _ in range(10):  # past psycopg's prepare_threshold (5): now prepared on one backend
            a.execute(query)
        pid(b)  # B's open transaction holds that backend; A's next statement goes elsewhere
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            a.execute(query)
        b.rollback()
    with (
        pgbouncer_transaction.connect(database.name, prepare_threshold=None) as a,
        pgbouncer_transaction.connect(database.name, autocommit=False) as b,
    ):
        for _ in range(10):
            a.execute(query)
        pid(b)
        a.execute(query)
        b.rollback()


def test_url_and_auth(pgbouncer_transaction: pgb.PgBouncer, database: Database) -> None:
    url = pgbouncer_transaction.url(database.name)
    assert url == (
        f"postgresql+psycopg://{database.server.user}:"
        f"{quote(database.server.password, safe='')}"
        f"@127.0.0.1:{pgbouncer_transaction.port}/{database.name}"
    )
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == database.name
            )
    finally:
        engine.dispose()
    with pytest.raises(psycopg.OperationalError):  # PgBouncer itself checks the password
        psycopg.connect(
            **{**pgbouncer_transaction.connect_kwargs(database.name), "password": "wrong"},
            connect_timeout=5,
        ).close()
    with pytest.raises(psycopg.OperationalError):  # only the test's database is routed
        pgbouncer_transaction.connect("postgres").close()


def test_start_stop_and_many_clients(database: Database, tmp_path: Path) -> None:
    server = database.server
    bouncer = pgb.PgBouncer(
        upstream_host=server.host,
        upstream_port=server.port,
        user=server.user,
        password=server.password,
        workdir=tmp_path,
        pool_mode="transaction",
    )  # wildcard databases entry
    with bouncer:
        assert bouncer.running
        conns = [bouncer.connect(database.name) for _ in range(30)]
        try:
            assert all(c.execute("SELECT 1").fetchone() == (1,) for c in conns)
            backends = database.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()",
                (database.name,),
            )[0][0]
            assert backends <= bouncer.default_pool_size
        finally:
            for c in conns:
                c.close()
    assert not bouncer.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**bouncer.connect_kwargs(database.name), connect_timeout=2).close()
    assert "listening on 127.0.0.1" in bouncer.log()
