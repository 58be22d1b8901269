"""Through a real PgBouncer: a pooler the runner was not told of is refused before anything is
locked or written, whatever its mode; a session-mode pool declared with MIGRATION_POOLER=session
migrates normally; the commands that take no lock work through any pooler.

How the runner tells (runner/lock/pooler.py): the backend pid the other end of its socket
announced at start-up is the server session's own only when that end is PostgreSQL itself;
PgBouncer (either mode) announces a cancel key of its own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter

import pytest

from runner.errors import ExitCode
from tests.support import pgbouncer
from tests.support.helpers import Running, new_database, run, runner_env
from tests.support.tcpproxy import TcpProxy

LEDGER = "migration_runner_ledger"


@pytest.fixture
def session_pool(database, tmp_path):
    yield from pgbouncer.pgbouncer_for(database, tmp_path, "session", default_pool_size=20)


@pytest.fixture
def transaction_pool(database, tmp_path):
    yield from pgbouncer.pgbouncer_transaction(database, tmp_path)


@pytest.fixture
def transaction_pool_of_one(database, tmp_path):
    yield from pgbouncer.pgbouncer_for(database, tmp_path, "transaction", default_pool_size=1)


def _assert_refused_untouched(result, database, *, pooler="undeclared"):
    """Refused naming the pooler and the fix, before anything was locked or written."""
    result.check_log_contract()
    result.assert_clean()
    assert result.code == ExitCode.CONFIG, result.stdout
    error = result.event("error")
    assert error["pooler"] == pooler, error
    assert error["announced_pid"] != error["server_pid"], error
    message = error["message"]
    assert "pooler or proxy" in message and "MIGRATION_POOLER=session" in message, message
    assert "DATABASE_URL/DB_HOST at the database itself" in message, message
    assert f"{error['announced_pid']}" in message and f"{error['server_pid']}" in message
    assert not [e for e in result.events if e["event"] == "lock.acquired"]
    assert not database.table_exists("alembic_version")
    assert not database.table_exists(LEDGER) and not database.table_exists("audit")
    assert database.advisory_locks() == 0


def test_session_pooling_without_the_declaration_is_refused_naming_the_setting(
    database, project, session_pool
):
    """Session mode would hold the lock, but nothing in the protocol says which mode a pooler
    is in: without MIGRATION_POOLER=session any pooler is refused, the same every time."""
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project, DATABASE_URL=session_pool.url(database.name))
    _assert_refused_untouched(run(env), database)


def test_session_pooling_declared_migrates_normally(database, project, session_pool):
    project.audited_chain(["a1", "a2"])
    env = runner_env(
        database, project, DATABASE_URL=session_pool.url(database.name), MIGRATION_POOLER="session"
    )
    results = [p.finish() for p in [Running(env) for _ in range(3)]]

    assert [r.code for r in results] == [0, 0, 0], [r.stdout for r in results]
    assert Counter(r.summary["outcome"] for r in results) == {"migrated": 1, "up_to_date": 2}
    assert database.query("SELECT rev, count(*) FROM audit GROUP BY rev ORDER BY rev") == [
        ("a1", 1),
        ("a2", 1),
    ]
    for result in results:
        result.assert_clean()
    migrated = next(r for r in results if r.summary["outcome"] == "migrated")
    seen = migrated.event("lock.through_pooler")
    assert seen["pooler"] == "session" and seen["announced_pid"] != seen["server_pid"]


@pytest.mark.parametrize(
    "args", [("upgrade",), ("stamp", "head"), ("downgrade", "base")], ids=lambda a: a[0]
)
def test_transaction_pooling_is_refused_at_once_with_one_connection(
    database, project, transaction_pool, args
):
    """Every command that takes the lock: refused before any lock statement (a session lock
    leaked into a transaction pool poisons a server session for every client), with no
    second connection to find out, and nothing written."""
    project.audited_chain(["a1"])
    env = runner_env(
        database,
        project,
        DATABASE_URL=transaction_pool.url(database.name),
        MIGRATION_LOG_LEVEL="debug",
    )
    result = run(env, *args)
    _assert_refused_untouched(result, database)
    roles = [e.get("role") for e in result.events if e["event"] == "db.connected"]
    assert roles == ["session"], roles


def test_a_transaction_pool_of_one_refuses_a_single_runner_promptly(
    database, project, transaction_pool_of_one
):
    """With the pool's only server connection, a check that needed a second one would wait
    for itself (PgBouncer's query_wait_timeout, 120 s): this one needs none."""
    project.audited_chain(["a1"])
    url = transaction_pool_of_one.url(database.name)
    result = run(runner_env(database, project, DATABASE_URL=url), timeout=30)
    _assert_refused_untouched(result, database)


def test_a_wrong_declaration_still_commits_nothing_without_the_lock(
    database, project, transaction_pool
):
    """MIGRATION_POOLER=session in front of a transaction pool: the runner believes it, and
    the checks under the lock (TRY_SQL, the check before each COMMIT) are what is left. Any
    revision it commits was committed on the server session holding the lock."""
    project.audited_chain(["a1"])
    env = runner_env(
        database,
        project,
        DATABASE_URL=transaction_pool.url(database.name),
        MIGRATION_POOLER="session",
    )
    result = run(env)
    result.check_log_contract()
    result.assert_clean()
    if result.code == ExitCode.CONFIG:
        error = result.event("error")
        assert error["pooler"] == "transaction" and "MIGRATION_POOLER" in error["message"]
        assert database.version() == []
    else:
        assert result.code == 0 and database.version() == ["a1"], result.stdout
    assert database.advisory_locks() == 0  # nothing stranded on a pooled backend


@pytest.mark.parametrize("args", [("current",), ("history",), ("check",)], ids=lambda a: a[0])
def test_commands_that_take_no_lock_work_through_a_transaction_pool(
    database, project, transaction_pool, args
):
    project.audited_chain(["a1"])
    assert run(runner_env(database, project)).code == 0
    result = run(
        runner_env(database, project, DATABASE_URL=transaction_pool.url(database.name)), *args
    )
    result.check_log_contract()
    assert result.code == 0, result.stderr


def test_transaction_pooling_does_not_stop_a_runner_with_nothing_to_do(
    database, project, transaction_pool
):
    """The no-op path needs no lock, so it works through any pooler."""
    project.audited_chain(["a1"])
    assert run(runner_env(database, project)).code == 0
    result = run(runner_env(database, project, DATABASE_URL=transaction_pool.url(database.name)))
    assert result.code == 0
    assert result.summary["outcome"] == "up_to_date"


def test_a_byte_for_byte_tunnel_is_the_server_itself(database, project):
    """A TCP tunnel (SSH, NAT, a network load balancer) passes the server's own start-up
    message through: no pooler, no declaration needed, one connection for the check."""
    project.audited_chain(["a1"])
    with TcpProxy(database.server.port) as proxy:
        url = proxy.url(database.server.user, database.server.password, database.name)
        result = run(runner_env(None, project, DATABASE_URL=url, MIGRATION_LOG_LEVEL="debug"))
    result.check_log_contract()
    assert result.code == 0, result.stdout
    assert database.version() == ["a1"]
    assert not [e for e in result.events if e["event"] == "lock.through_pooler"]
    roles = [e.get("role") for e in result.events if e["event"] == "db.connected"]
    assert "probe" not in roles and roles[0] == "session", roles


# --- the herd through transaction pooling (issue 21): all refused, never a mix, never a hang --

HERD = 6
#: ``POOLER_HERD_REPEATS=N``: N herds at each pool size 1-4 (13: 52 herds, docs/promises.md);
#: unset: one herd at pool sizes 1 and 2, the guard every run of the suite pays for
HERD_REPEATS = int(os.environ.get("POOLER_HERD_REPEATS") or 1)
POOL_SIZES = [1, 2, 3, 4] if os.environ.get("POOLER_HERD_REPEATS") else [1, 2]
HERD_TIMEOUT_S = 120


@contextlib.contextmanager
def _cpu_load(burners: int = 2):
    """Two CPU burners for the herd's duration (the load that found the mixed herds)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _herd_verdict(results, applied) -> str | None:
    """``refused`` (every runner refused naming the pooler), ``migrated`` (every runner
    succeeded, one of them migrating, each revision applied once), else None."""
    refused = [r.code == ExitCode.CONFIG and bool(r.event("error").get("pooler")) for r in results]
    if all(refused):
        return "refused" if not applied else None
    outcomes = Counter(r.summary["outcome"] if r.code == 0 else r.code for r in results)
    once = all(n == 1 for _rev, n in applied)
    if outcomes == {"migrated": 1, "up_to_date": HERD - 1} and once:
        return "migrated"
    return None


@pytest.mark.parametrize("pool_size", POOL_SIZES)
def test_a_herd_through_transaction_pooling_is_refused_whole(
    database, project, tmp_path, pool_size, record_property
):
    """Six runners at once through PgBouncer in transaction mode, two CPU burners running:
    every herd ends with every runner refused naming the pooler (or, were the pooler ever
    let through, every runner succeeded with each revision applied once); a mix, a hang
    (HERD_TIMEOUT_S) or a lock left on a pooled server session fails."""
    project.audited_chain(["a1", "a2", "a3"])
    verdicts: Counter[str] = Counter()
    for repeat in range(HERD_REPEATS):
        verdicts[_one_herd(database, project, tmp_path / f"b{repeat}", pool_size)] += 1
    record_property("herd_verdicts", dict(verdicts))
    print(f"pool size {pool_size}: {HERD_REPEATS} herds of {HERD}: {dict(verdicts)}")


def _one_herd(database, project, workdir, pool_size) -> str:
    with new_database(database.server) as db, _bouncer(db, workdir, pool_size) as bouncer:
        env = runner_env(
            db,
            project,
            DATABASE_URL=bouncer.url(db.name),
            MIGRATION_DB_WAIT_TIMEOUT=20,
            MIGRATION_LOCK_WAIT_TIMEOUT=60,
        )
        with _cpu_load(), _herd(env) as runners:
            results = [r.finish(timeout=HERD_TIMEOUT_S) for r in runners]
        for result in results:
            result.check_log_contract()
        applied = (
            db.query("SELECT rev, count(*) FROM audit GROUP BY rev ORDER BY rev")
            if db.table_exists("audit")
            else []
        )
        verdict = _herd_verdict(results, applied)
        assert verdict is not None, (applied, [r.stdout[-1500:] for r in results])
        assert db.advisory_locks() == 0, "a lock left on a pooled server session"
        return verdict


@contextlib.contextmanager
def _herd(env):
    """``HERD`` runners started together; any still running on the way out is killed (a
    hang fails the test, and leaves nothing behind)."""
    runners = []
    try:
        runners += [Running(env) for _ in range(HERD)]
        yield runners
    finally:
        for runner in runners:
            if runner.proc.poll() is None:
                runner.proc.kill()
                runner.proc.wait()


@contextlib.contextmanager
def _bouncer(db, workdir, pool_size):
    workdir.mkdir()
    gen = pgbouncer.pgbouncer_for(db, workdir, "transaction", default_pool_size=pool_size)
    bouncer = next(gen)
    try:
        yield bouncer
    finally:
        gen.close()
