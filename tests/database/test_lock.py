"""The migration lock against real PostgreSQL, in-process."""

from __future__ import annotations

import threading

import psycopg
import pytest

from runner.errors import LockTimeout
from runner.lock.advisory import MigrationLock, channel_for, lock_key
from runner.observe import logs
from tests.support.helpers import wait_until


def test_lock_key_is_stable_signed_64_bit_and_name_specific():
    assert lock_key("alembic:public.alembic_version") == lock_key("alembic:public.alembic_version")
    assert lock_key("alembic:public.alembic_version") != lock_key("alembic:billing.alembic_version")
    assert -(2**63) <= lock_key("x") < 2**63
    assert lock_key("alembic:public.alembic_version") == 7267386378400977936  # never changes
    assert channel_for(-1) == "migration_runner_ffffffffffffffff"


@pytest.fixture
def sessions(database):
    opened: list[psycopg.Connection] = []

    def session(name: str = "t") -> psycopg.Connection:
        conn = database.connect(application_name=name)
        opened.append(conn)
        return conn

    yield session
    for conn in opened:
        conn.close()


def _acquire_in_thread(lock: MigrationLock, budget: float) -> tuple[threading.Thread, list]:
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(lock.acquire(budget))
        except Exception as exc:  # reported to the test through outcome
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _waiting(database, pid: int) -> bool:
    """The waiter has tried the lock (and, the lock being held, failed) at least once."""
    rows = database.query(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND "
        "(query LIKE '%%pg_try_advisory_lock%%' OR query LIKE 'LISTEN%%')",
        (pid,),
    )
    return rows[0][0] == 1


def test_waiter_holds_no_transaction_or_snapshot_and_proceeds_on_release(database, sessions):
    holder = MigrationLock(sessions("holder"), "L", logs.get())
    waiter_conn = sessions("waiter")
    waiter = MigrationLock(waiter_conn, "L", logs.get())
    assert holder.try_acquire()
    thread, outcome = _acquire_in_thread(waiter, budget=30)
    pid = waiter_conn.info.backend_pid
    wait_until(lambda: _waiting(database, pid), what="the waiter to listen")

    for _ in range(5):  # sampled across several poll cycles
        state, xmin, xact = database.query(
            "SELECT state, backend_xmin, xact_start FROM pg_stat_activity WHERE pid = %s", (pid,)
        )[0]
        assert state in {"idle", "active"}  # never "idle in transaction"
        if state == "idle":
            assert (xmin, xact) == (None, None)

    holder.release()
    thread.join(timeout=10)
    assert not thread.is_alive() and isinstance(outcome[0], int)
    assert waiter.held


def test_waiter_does_not_deadlock_with_the_holders_create_index_concurrently(database, sessions):
    setup = sessions()
    setup.execute("CREATE TABLE big AS SELECT g AS x FROM generate_series(1, 1000) g")
    holder_conn = sessions("holder")
    holder = MigrationLock(holder_conn, "L", logs.get())
    assert holder.try_acquire()
    waiter_conn = sessions("waiter")
    thread, outcome = _acquire_in_thread(MigrationLock(waiter_conn, "L", logs.get()), budget=30)
    wait_until(
        lambda: _waiting(database, waiter_conn.info.backend_pid), what="the waiter to listen"
    )

    holder_conn.execute("SET statement_timeout = '20s'")
    holder_conn.execute("CREATE INDEX CONCURRENTLY big_x ON big (x)")  # must not wait on the waiter
    holder.release()
    thread.join(timeout=10)
    assert isinstance(outcome[0], int)
    assert database.query(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_x'::regclass"
    ) == [(True,)]


def test_a_blocking_pg_advisory_lock_waiter_would_deadlock_with_cic(database, sessions):
    """Why the waiter polls: the naive blocking wait is what breaks (Flyway #1654)."""
    setup = sessions()
    setup.execute("CREATE TABLE big AS SELECT g AS x FROM generate_series(1, 1000) g")
    key = lock_key("L")
    with psycopg.connect(database.server.admin_conninfo, autocommit=True) as admin:
        # a superuser's setting: the holder (only) finds the deadlock at once
        admin.execute(f"ALTER DATABASE \"{database.name}\" SET deadlock_timeout = '100ms'")
        holder = sessions("holder")
        admin.execute(f'ALTER DATABASE "{database.name}" RESET deadlock_timeout')
    holder.execute("SELECT pg_advisory_lock(%s)", (key,))
    blocked = sessions("blocked")
    errors: list = []

    def block() -> None:
        try:
            blocked.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=block, daemon=True)
    thread.start()
    wait_until(
        lambda: (
            database.query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )[0][0]
            == 1
        ),
        what="the blocked waiter",
    )
    with pytest.raises(psycopg.Error) as err:
        holder.execute("SET lock_timeout = '5s'")
        holder.execute("CREATE INDEX CONCURRENTLY big_x ON big (x)")
        holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        thread.join(timeout=10)
        raise AssertionError(f"no deadlock; waiter errors: {errors}")
    assert isinstance(err.value, psycopg.errors.DeadlockDetected) or errors
    holder.execute("SELECT pg_advisory_unlock_all()")
    thread.join(timeout=10)


def test_timeout_names_the_holder(sessions):
    holder = sessions("the-holder")
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("L"),))
    with pytest.raises(LockTimeout) as err:
        MigrationLock(sessions("waiter"), "L", logs.get()).acquire(0.5)
    assert "the-holder" in str(err.value)
    assert str(holder.info.backend_pid) in str(err.value)
    assert err.value.fields["holders"][0]["pid"] == holder.info.backend_pid


def test_locks_with_different_names_do_not_block_each_other(sessions):
    first = MigrationLock(sessions(), "alembic:public.alembic_version", logs.get())
    second = MigrationLock(sessions(), "alembic:billing.alembic_version", logs.get())
    assert first.acquire(0) == 0 and second.acquire(0) == 0


def test_release_is_safe_twice_and_frees_the_lock(database, sessions):
    lock = MigrationLock(sessions(), "L", logs.get())
    lock.acquire(0)
    lock.release()
    lock.release()
    assert database.advisory_locks() == 0
    assert MigrationLock(sessions(), "L", logs.get()).try_acquire()


def test_sessions_are_named_by_pid_and_application_or_said_to_be_gone():
    from runner.errors import name_sessions

    rows = [
        {"pid": 7, "application_name": "api", "state": "idle in transaction"},
        {"pid": 9, "application_name": "", "state": "active"},
    ]
    assert name_sessions(rows, lambda r: r["state"]) == (
        "pid 7 (api, idle in transaction); pid 9 (no application_name, active)"
    )
    assert name_sessions([], lambda r: r["state"]) == "a session that has since gone"
