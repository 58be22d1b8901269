"""Through a real PgBouncer: session pooling works, transaction pooling is refused before any
lock is taken (a session lock there would be stranded on a pooled backend)."""

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


@pytest.fixture
def session_pool(database, tmp_path):
    yield from pgbouncer.pgbouncer_for(database, tmp_path, "session", default_pool_size=20)


@pytest.fixture
def transaction_pool(database, tmp_path):
    yield from pgbouncer.pgbouncer_transaction(database, tmp_path)


def test_session_pooling_migrates_normally(database, project, session_pool):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project, DATABASE_URL=session_pool.url(database.name))
    results = [p.finish() for p in [Running(env) for _ in range(3)]]

    assert [r.code for r in results] == [0, 0, 0], [r.stdout for r in results]
    assert Counter(r.summary["outcome"] for r in results) == {"migrated": 1, "up_to_date": 2}
    assert database.query("SELECT rev, count(*) FROM audit GROUP BY rev ORDER BY rev") == [
        ("a1", 1),
        ("a2", 1),
    ]
    for result in results:
        result.assert_clean()


def test_transaction_pooling_is_refused_or_migrates_safely(database, project, transaction_pool):
    """The probe (another client's transaction on this client's server session) usually
    refuses a transaction pooler before the lock is taken; it is timing-dependent (under load
    PgBouncer may hand the server session elsewhere), and then the check before each COMMIT
    holds: the run migrates only on the server session holding the lock (issue 21)."""
    project.audited_chain(["a1"])
    env = runner_env(database, project, DATABASE_URL=transaction_pool.url(database.name))
    result = run(env)
    result.assert_clean()
    if result.code == ExitCode.CONFIG:
        error = result.event("error")
        assert error["pooler"] == "transaction"
        assert "transaction mode" in error["message"] and "DATABASE_URL" in error["message"]
        assert database.version() in ([], ["a1"])
    else:
        assert result.code == 0 and database.version() == ["a1"], result.stdout
    assert database.advisory_locks() == 0  # nothing stranded on a pooled backend


def test_transaction_pooling_does_not_stop_a_runner_with_nothing_to_do(
    database, project, transaction_pool
):
    """The no-op path needs no lock, so it works through any pooler."""
    project.audited_chain(["a1"])
    assert run(runner_env(database, project)).code == 0
    result = run(runner_env(database, project, DATABASE_URL=transaction_pool.url(database.name)))
    assert result.code == 0
    assert result.summary["outcome"] == "up_to_date"


def test_a_session_that_reaches_the_server_directly_opens_no_probe(database, project):
    """The pooler check needs a second connection only when something stands between the
    runner and the server: a herd starting at once then holds one connection per runner."""
    project.revision("a1", None, "op.execute('CREATE TABLE t1 (id int)')")
    result = run(runner_env(database, project, MIGRATION_LOG_LEVEL="debug"))
    assert result.code == 0, result.stdout
    roles = [e.get("role") for e in result.events if e["event"] == "db.connected"]
    assert "probe" not in roles and roles[0] == "session", roles


# --- the herd through transaction pooling (issue 21): never a mix, never a hang ------------

HERD = 6
#: herds per pool size (1-4): ``POOLER_HERD_REPEATS=13`` gives 52 herds (docs/promises.md)
HERD_REPEATS = int(os.environ.get("POOLER_HERD_REPEATS") or 1)


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


def _herd_verdict(results) -> str:
    """``refused`` (every runner refused, naming the pooler), ``migrated`` (every runner
    succeeded), else what mix it was."""
    kinds = []
    for result in results:
        result.check_log_contract()
        if result.code == ExitCode.CONFIG and result.event("error").get("pooler"):
            kinds.append("refused")
        elif result.code == 0:
            kinds.append("migrated")
        else:
            kinds.append(f"exit {result.code}")
    return kinds[0] if len(set(kinds)) == 1 else "mix: " + ", ".join(sorted(kinds))


@pytest.mark.parametrize("pool_size", [1, 2, 3, 4])
def test_a_herd_through_transaction_pooling_is_safe(
    database, project, tmp_path, pool_size, record_property
):
    """Every herd: no runner hangs, none fails other than by refusing the pooler (exit 2),
    each revision is applied at most once, the version is the scripts' or base, and no lock
    is left on a pooled server session. Whether a herd was all-refused, all-migrated or a
    mix is counted (printed, and a ``herd_verdicts`` property): issue 21 asks for no mix,
    which ``POOLER_HERD_NO_MIX=1`` asserts (see docs/promises.md for the counts)."""
    if not os.environ.get("POOLER_HERD_REPEATS"):
        # a herd through a pool of one can still hang a runner past 120 s under CPU load
        # (seen in CI): issue 21's promise 10 is open; run it on purpose, not in every CI run
        pytest.skip("herds through PgBouncer: POOLER_HERD_REPEATS=N (open: issue 21)")
    project.audited_chain(["a1", "a2", "a3"])
    verdicts: Counter[str] = Counter()
    for repeat in range(HERD_REPEATS):
        verdict = _one_herd(database, project, tmp_path / f"b{repeat}", pool_size)
        verdicts[verdict] += 1
    record_property("herd_verdicts", dict(verdicts))
    print(f"pool size {pool_size}: {HERD_REPEATS} herds of {HERD}: {dict(verdicts)}")
    if os.environ.get("POOLER_HERD_NO_MIX"):
        assert not [v for v in verdicts if v.startswith("mix")], verdicts


def _one_herd(database, project, workdir, pool_size) -> str:
    with new_database(database.server) as db, _bouncer(db, workdir, pool_size) as bouncer:
        env = runner_env(
            db,
            project,
            DATABASE_URL=bouncer.url(db.name),
            MIGRATION_DB_WAIT_TIMEOUT=20,
            MIGRATION_LOCK_WAIT_TIMEOUT=60,
        )
        with _cpu_load():
            runners = [Running(env) for _ in range(HERD)]
            results = [r.finish(timeout=120) for r in runners]  # bounded: a hang fails
        verdict = _herd_verdict(results)
        assert "exit" not in verdict, (verdict, [r.stdout[-1500:] for r in results])
        applied = (
            db.query("SELECT rev, count(*) FROM audit GROUP BY rev ORDER BY rev")
            if db.table_exists("audit")
            else []
        )
        assert all(n == 1 for _rev, n in applied), applied
        assert db.version() in ([], ["a1"], ["a2"], ["a3"])
        assert db.advisory_locks() == 0, "a lock left on a pooled server session"
        return verdict


@contextlib.contextmanager
def _bouncer(db, workdir, pool_size):
    workdir.mkdir()
    gen = pgbouncer.pgbouncer_for(db, workdir, "transaction", default_pool_size=pool_size)
    bouncer = next(gen)
    try:
        yield bouncer
    finally:
        gen.close()
