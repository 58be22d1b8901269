"""Through a real PgBouncer: session pooling works, transaction pooling is refused before any
lock is taken (a session lock there would be stranded on a pooled backend)."""

from __future__ import annotations

from collections import Counter

import pytest

from runner.errors import ExitCode
from tests.support import pgbouncer
from tests.support.helpers import Running, run, runner_env


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


def test_transaction_pooling_is_refused_before_taking_the_lock(database, project, transaction_pool):
    project.audited_chain(["a1"])
    env = runner_env(database, project, DATABASE_URL=transaction_pool.url(database.name))
    result = run(env)

    assert result.code == ExitCode.CONFIG
    error = result.event("error")
    assert error["pooler"] == "transaction"
    assert "transaction mode" in error["message"] and "DATABASE_URL" in error["message"]
    assert not [e for e in result.events if e["event"] == "lock.acquired"]
    assert database.version() == []
    assert database.advisory_locks() == 0  # nothing stranded on a pooled backend
    result.assert_clean()


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
