"""``migration-runner upgrade`` as real processes against real PostgreSQL."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from devtools.pgcluster import free_port
from runner.errors import ExitCode
from runner.lock.advisory import lock_key
from tests.support.helpers import Running, run, runner_env, wait_until

REVS = ["a1", "a2", "a3", "a4"]
DEFAULT_LOCK = lock_key("alembic:public.alembic_version")


def test_twenty_runners_at_once_apply_each_revision_exactly_once(database, project):
    project.audited_chain(REVS)
    env = runner_env(database, project)
    procs = [Running(env) for _ in range(20)]
    results = [p.finish(timeout=120) for p in procs]

    assert [r.code for r in results] == [0] * 20, [r.stdout for r in results if r.code]
    assert Counter(r for (r,) in database.query("SELECT rev FROM audit")) == {
        rev: 1 for rev in REVS
    }
    outcomes = Counter(r.summary["outcome"] for r in results)
    assert outcomes == {"migrated": 1, "up_to_date": 19}
    (migrated,) = [r for r in results if r.summary["outcome"] == "migrated"]
    assert migrated.summary["applied"] == REVS
    assert [e["revision"] for e in migrated.events if e["event"] == "revision.applied"] == REVS
    assert database.version() == ["a4"]
    assert database.advisory_locks() == 0
    for result in results:
        result.assert_clean()


def test_runner_at_target_exits_without_taking_the_lock(database, project):
    project.audited_chain(REVS)
    env = runner_env(database, project)
    assert run(env).code == 0
    with database.connect(application_name="holder") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (DEFAULT_LOCK,))
        result = run(dict(env, MIGRATION_LOCK_WAIT_TIMEOUT="0"))  # would time out if it asked
    assert result.code == 0
    assert result.summary["outcome"] == "up_to_date"
    assert result.summary["lock_wait_ms"] is None
    assert not [e for e in result.events if e["event"].startswith("lock.")]


def test_runner_waits_for_a_database_that_starts_five_seconds_late(stopped_cluster, project):
    project.audited_chain(REVS[:2])
    url = stopped_cluster.url("postgres")
    env = runner_env(None, project, DATABASE_URL=url, MIGRATION_DB_WAIT_TIMEOUT=60)
    proc = Running(env)
    failed = proc.wait_for_event("db.connect_failed")
    assert failed["error_kind"] == "refused"
    wait_until(lambda: time.monotonic() - proc.started >= 5, what="a 5 s outage")
    stopped_cluster.start()
    result = proc.finish()

    assert result.code == 0, result.stdout
    assert result.summary["outcome"] == "migrated"
    assert result.summary["connect_attempts"] >= 2
    attempts = [e for e in result.events if e["event"] == "db.connect_failed"]
    assert [e["attempt"] for e in attempts] == list(range(1, len(attempts) + 1))
    assert all(e["next_delay_s"] <= 5 for e in attempts)
    result.assert_clean()


def test_wait_budget_shorter_than_the_outage_exits_unreachable(project):
    project.audited_chain(REVS[:1])
    url = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/postgres"
    result = run(runner_env(None, project, DATABASE_URL=url, MIGRATION_DB_WAIT_TIMEOUT=2))

    assert result.code == ExitCode.UNREACHABLE
    error = result.event("error")
    assert error["error_code"] == "unreachable"
    assert "MIGRATION_DB_WAIT_TIMEOUT" in error["message"]
    assert 2000 <= result.summary["total_ms"] < 2000 + 5000  # gave up at the budget
    result.assert_clean("pw@")


def test_wrong_password_fails_fast_naming_the_setting(database, project):
    project.audited_chain(REVS[:1])
    env = runner_env(
        database,
        project,
        DATABASE_URL=database.url(password="not-the-password"),
        MIGRATION_DB_WAIT_TIMEOUT=60,
    )
    result = run(env)

    assert result.code == ExitCode.REJECTED
    assert result.summary["connect_attempts"] == 0 or result.summary["connect_attempts"] == 1
    assert result.summary["total_ms"] < 15000  # far below the 60 s budget: no retries
    assert "DB_PASSWORD" in result.event("error")["message"]
    result.assert_clean("not-the-password")


def test_missing_database_fails_fast_naming_the_setting(database, project):
    project.audited_chain(REVS[:1])
    env = runner_env(
        database,
        project,
        DATABASE_URL=database.url(name="no_such_db"),
        MIGRATION_DB_WAIT_TIMEOUT=60,
    )
    result = run(env)

    assert result.code == ExitCode.REJECTED
    assert result.summary["total_ms"] < 15000
    assert result.event("error")["error_kind"] == "database_missing"
    assert "DB_NAME" in result.event("error")["message"]
    result.assert_clean()


def test_failing_revision_rolls_back_and_the_fixed_run_completes(database, project):
    project.audited_chain(["a1"])
    bad = project.revision(
        "a2",
        "a1",
        """
        op.execute("CREATE TABLE half_done (x int)")
        raise RuntimeError("boom in a2")
    """,
    )
    env = runner_env(database, project)
    result = run(env)

    assert result.code == ExitCode.MIGRATION_FAILED
    error = result.event("error")
    assert error["revision"] == "a2"
    assert bad.name in error["message"] and "boom in a2" in error["message"]
    assert result.summary["applied"] == ["a1"]
    assert result.summary["to_revision"] == ["a1"]
    assert database.version() == ["a1"]
    assert not database.table_exists("half_done")
    assert database.advisory_locks() == 0
    result.assert_clean()

    project.revision("a2", "a1", 'op.execute("CREATE TABLE half_done (x int)")')
    again = run(env)
    assert again.code == 0
    assert again.summary["applied"] == ["a2"]
    assert database.version() == ["a2"]


def test_lock_held_past_the_budget_times_out_naming_the_holder(database, project):
    project.audited_chain(REVS[:1])
    with database.connect(application_name="held-by-test") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (DEFAULT_LOCK,))
        holder_pid = holder.info.backend_pid
        result = run(runner_env(database, project, MIGRATION_LOCK_WAIT_TIMEOUT=2))

    assert result.code == ExitCode.LOCK_TIMEOUT
    error = result.event("error")
    assert "held-by-test" in error["message"] and str(holder_pid) in error["message"]
    waiting = [e for e in result.events if e["event"] == "lock.waiting"]
    assert waiting and waiting[0]["holders"][0]["application_name"] == "held-by-test"
    assert database.version() == []
    result.assert_clean()


SLOW = """
op.execute("CREATE TABLE slow_marker (x int)")
op.execute("SELECT pg_sleep(60)")
"""


def _running_sleep(database) -> bool:
    return bool(
        database.query(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
            "'SELECT pg_sleep(60)%%' AND state = 'active'"
        )[0][0]
    )


def test_sigterm_during_a_revision_rolls_back_releases_and_exits_promptly(database, project):
    project.audited_chain(["a1"])
    project.revision("a2", "a1", SLOW)
    proc = Running(runner_env(database, project))
    wait_until(lambda: _running_sleep(database), what="the slow revision to start")
    sent = proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=30)

    assert result.code == ExitCode.INTERRUPTED
    assert time.monotonic() - sent < 5
    assert result.summary["outcome"] == "interrupted"
    assert result.event("error")["signal"] == "SIGTERM"
    assert database.version() == ["a1"]
    assert not database.table_exists("slow_marker")
    assert not _running_sleep(database)
    assert database.advisory_locks() == 0
    assert [e["by"] for e in result.events if e["event"] == "lock.released"] == ["unlock"]
    result.assert_clean()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_sigint_or_sighup_while_waiting_for_the_lock_exits_interrupted(database, project, sig):
    project.audited_chain(["a1"])
    with database.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (DEFAULT_LOCK,))
        proc = Running(runner_env(database, project))
        proc.wait_for_event("lock.waiting")
        sent = proc.signal(sig)
        result = proc.finish(timeout=30)
    assert result.code == ExitCode.INTERRUPTED
    assert time.monotonic() - sent < 5
    assert database.version() == []
    assert result.summary["exit_code"] == ExitCode.INTERRUPTED
    assert result.event("error")["signal"] == sig.name
    result.assert_clean()


def test_sigkill_during_a_revision_leaves_a_consistent_database(database, project):
    project.audited_chain(["a1"])
    project.revision("a2", "a1", SLOW)
    env = runner_env(database, project)
    proc = Running(env)
    wait_until(lambda: _running_sleep(database), what="the slow revision to start")
    proc.signal(signal.SIGKILL)
    proc.finish(timeout=30)

    assert database.version() == ["a1"]
    project.revision("a2", "a1", 'op.execute("CREATE TABLE slow_marker (x int)")')
    again = run(env)  # waits for the dead runner's backend to notice and release the lock
    assert again.code == 0, again.stdout
    assert database.version() == ["a2"]
    assert database.table_exists("slow_marker")
    assert database.advisory_locks() == 0


def test_missing_settings_are_a_configuration_error_not_a_local_fallback(project):
    result = run(runner_env(None, project))
    assert result.code == ExitCode.CONFIG
    assert "DATABASE_URL" in result.event("error")["message"]
    result.assert_clean()


def test_password_in_a_malformed_url_never_reaches_the_output(project):
    url = "postgresql://postgres:hunter2-secret@127.0.0.1:notaport/db"
    result = run(runner_env(None, project, DATABASE_URL=url))
    assert result.code == ExitCode.CONFIG
    result.assert_clean("hunter2-secret")


def test_application_name_identifies_the_runner(database, project):
    project.revision(
        "a1",
        None,
        'op.execute("CREATE TABLE seen AS SELECT application_name '
        'FROM pg_stat_activity WHERE pid = pg_backend_pid()")',
    )
    assert run(runner_env(database, project)).code == 0
    (name,) = database.query("SELECT application_name FROM seen")[0]
    assert name.startswith("migration-runner/")


def test_waiter_proceeds_when_the_holder_releases(database, project):
    project.audited_chain(["a1"])
    with database.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (DEFAULT_LOCK,))
        proc = Running(runner_env(database, project))
        proc.wait_for_event("lock.waiting")
        holder.execute("SELECT pg_advisory_unlock(%s)", (DEFAULT_LOCK,))
        result = proc.finish()
    assert result.code == 0
    assert result.summary["outcome"] == "migrated"
    assert result.summary["lock_wait_ms"] > 0
