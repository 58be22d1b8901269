"""DDL safety against a real workload: ``lock_timeout`` with retries, per-revision timeout
overrides, ``statement_timeout``, and ``CREATE INDEX CONCURRENTLY`` with racing runners.

The "app" is real PostgreSQL sessions: a transaction that reads ``accounts`` and stays open
(it holds ACCESS SHARE, so an ``ALTER TABLE`` needing ACCESS EXCLUSIVE must wait for it), and
a reader thread that runs ``SELECT count(*) FROM accounts`` every ~50 ms and records how long
each query took. A waiting ``ALTER`` sits at the head of the table's lock queue, so every
reader queues behind it: without ``lock_timeout`` the readers stall for as long as the app
transaction stays open; with it they stall for at most ``lock_timeout``.

Every wait here is bounded and waits for an event (a log line, a pg_stat_activity state);
the only fixed durations are how long an app transaction deliberately stays open once the
migration waits for it (3 s in the contrast test, 2.5 s in the CIC-vs-lock_timeout tests),
which is the workload those tests are about.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.pgcluster import free_port
from runner.errors import ExitCode
from runner.limits import NO_LIMITS, Timeouts, limits_for
from tests.support.helpers import Database, Project, Result, Running, run, runner_env, wait_until
from tests.support.urls import pg_url

ADD_NOTE = 'op.execute("ALTER TABLE accounts ADD COLUMN note text")'
CIC = """
with op.get_context().autocommit_block():
    op.create_index("ix_accounts_name", "accounts", ["name"], postgresql_concurrently=True)
"""
READ_EVERY_S = 0.05
MARGIN_S = 0.5  # scheduling slack on a loaded 2-core machine, on top of lock_timeout


# --- the workload -------------------------------------------------------------------------


class AppTransaction:
    """An application session that opens a transaction, runs ``sql`` and keeps it open."""

    def __init__(self, db: Database, name: str) -> None:
        self.conn = db.connect(application_name=name)
        self.conn.autocommit = False
        self.pid = self.conn.info.backend_pid
        self.opened: float | None = None

    def hold(
        self,
        sql: str = "SELECT count(*) FROM accounts",
        isolation: psycopg.IsolationLevel | None = None,
    ) -> None:
        if isolation is not None:
            self.conn.isolation_level = isolation
        self.conn.execute(sql).fetchall()
        assert self.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        self.opened = time.monotonic()

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS

    def commit(self) -> float:
        """End the transaction; return how long it was held open."""
        assert self.opened is not None
        self.conn.commit()
        return time.monotonic() - self.opened

    def close(self) -> None:
        self.conn.close()  # rolls back an open transaction


class Reader:
    """An app reader: ``SELECT count(*) FROM accounts`` every ~50 ms on an autocommit session
    of its own, recording each query's latency."""

    def __init__(self, db: Database) -> None:
        self.conn = db.connect(application_name="app-reader")
        self.samples: list[tuple[float, float]] = []  # (started, latency_s)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="app-reader")

    def start(self) -> Reader:
        self._thread.start()
        wait_until(lambda: len(self.samples) >= 3 or self.errors, timeout=15, what="reader running")
        assert not self.errors, self.errors
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.conn.execute("SELECT count(*) FROM accounts").fetchone()
            except psycopg.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            self.samples.append((started, time.monotonic() - started))
            self._stop.wait(READ_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # stuck behind a lock: cancel it so teardown never hangs
            self.conn.cancel_safe()
            self._thread.join(timeout=10)

    def max_latency(self) -> float:
        return max((latency for _started, latency in self.samples), default=0.0)

    def close(self) -> None:
        self.stop()
        self.conn.close()


class Runners:
    """Runner processes started by a test; any still running at teardown is killed."""

    def __init__(self) -> None:
        self.procs: list[Running] = []

    def start(self, env: dict[str, str]) -> Running:
        self.procs.append(Running(env))
        return self.procs[-1]

    def close(self) -> None:
        for running in self.procs:
            if running.proc.poll() is None:
                running.proc.kill()
                running.proc.wait(timeout=10)


@pytest.fixture
def accounts(database: Database) -> Database:
    """The database with an ``accounts`` table holding rows (created as the app would)."""
    with database.connect() as conn:
        conn.execute("CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            "INSERT INTO accounts (name) SELECT 'user ' || g FROM generate_series(1, 5000) g"
        )
        conn.execute("ANALYZE accounts")
    return database


@pytest.fixture
def sessions(database: Database) -> Iterator[Any]:
    """``sessions(name)`` opens an :class:`AppTransaction`; all are closed at teardown."""
    opened: list[AppTransaction] = []

    def open_session(name: str = "app-blocker") -> AppTransaction:
        opened.append(AppTransaction(database, name))
        return opened[-1]

    yield open_session
    for session in opened:
        session.close()


@pytest.fixture
def reader(accounts: Database) -> Iterator[Reader]:
    found = Reader(accounts)
    yield found
    found.close()


@pytest.fixture
def runners() -> Iterator[Runners]:
    started = Runners()
    yield started
    started.close()


# --- helpers --------------------------------------------------------------------------------


def with_options(path: Path, options: str) -> Path:
    """Give the revision file a module-level ``migration_runner`` dict."""
    path.write_text(path.read_text() + f"\n\nmigration_runner = {options}\n")
    return path


def events(result: Result, name: str) -> list[dict[str, Any]]:
    return [e for e in result.events if e["event"] == name]


def when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def has_note_column(db: Database) -> bool:
    return bool(
        db.query(
            "SELECT count(*) FROM information_schema.columns WHERE "
            "table_name = 'accounts' AND column_name = 'note'"
        )[0][0]
    )


def index_valid(db: Database, name: str) -> bool | None:
    rows = db.query(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s",
        (name,),
    )
    return rows[0][0] if rows else None


def runner_waiting_on_lock(db: Database, for_s: float = 0.0) -> list[tuple[int, str]]:
    """The runner sessions waiting on a heavyweight lock for at least ``for_s`` seconds."""
    return [
        (pid, query)
        for pid, query in db.query(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'migration-runner%%' AND wait_event_type = 'Lock' "
            "AND clock_timestamp() - query_start >= make_interval(secs => %s)",
            (for_s,),
        )
    ]


def report_transaction(sessions: Any) -> AppTransaction:
    """A long report: REPEATABLE READ, so it keeps a snapshot that CIC must wait out."""
    found = sessions("app-report")
    found.hold("SELECT count(*) FROM accounts", isolation=psycopg.IsolationLevel.REPEATABLE_READ)
    return found


def cic_then_report_ends(
    accounts: Database, report_tx: AppTransaction, proc: Running
) -> list[tuple[int, str]]:
    """Once the CIC has begun (its index exists, invalid), keep the report open 2.5 s more,
    longer than lock_timeout=1 s (the workload under test), then end it. Returns the runner
    sessions that were waiting on a lock for 2 s or more just before it ended."""
    wait_until(
        lambda: (
            index_valid(accounts, "ix_accounts_name") is not None or proc.proc.poll() is not None
        ),
        timeout=45,
        what="the CIC to begin",
    )
    time.sleep(2.5)
    waiting = runner_waiting_on_lock(accounts, for_s=2.0)
    report_tx.commit()
    return waiting


def report(**measured: Any) -> None:
    print(
        "\nmeasured: "
        + ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in measured.items()
        )
    )


# --- 1. against real load ------------------------------------------------------------------


def test_alter_behind_an_app_transaction_retries_and_never_stalls_readers_past_lock_timeout(
    accounts, project, sessions, reader, runners
):
    project.revision(
        "r0",
        None,
        """
        op.execute("CREATE TABLE audit (rev text)")
        op.execute("INSERT INTO audit VALUES ('r0')")
    """,
    )
    project.revision("r1", "r0", ADD_NOTE)
    blocker = sessions("app-blocker")
    blocker.hold()  # BEGIN; SELECT count(*) FROM accounts -- ACCESS SHARE, left open
    reader.start()
    env = runner_env(accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=1, MIGRATION_DDL_LOCK_RETRIES=10)
    proc = runners.start(env)

    proc.wait_for_event("revision.blocked", timeout=45)
    proc.wait_for_event("revision.blocked", timeout=45)
    held_s = blocker.commit()  # the app's transaction ends; the next attempt gets its lock
    result = proc.finish(timeout=60)
    reader.stop()

    assert result.code == 0, result.stdout
    assert result.summary["outcome"] == "migrated"
    assert result.summary["applied"] == ["r0", "r1"]  # r0 committed once, kept across retries
    assert accounts.query("SELECT rev FROM audit") == [("r0",)]
    assert [e["revision"] for e in events(result, "revision.applied")] == ["r0", "r1"]
    assert has_note_column(accounts)
    assert accounts.version() == ["r1"]

    blocked = events(result, "revision.blocked")
    assert [e["attempt"] for e in blocked] == [1, 2]  # no attempt after the blocker committed
    assert len(blocked) < 10  # far from giving up: MIGRATION_DDL_LOCK_RETRIES=10
    for event, (low, high) in zip(blocked, [(0.75, 1.25), (1.5, 2.5)], strict=False):
        assert event["revision"] == "r1"
        assert event["blockers"], event
        assert event["blockers"][0]["application_name"] == "app-blocker", event
        assert event["blockers"][0]["pid"] == blocker.pid, event
        assert low <= event["next_delay_s"] <= high, event  # 1, 2 s backoff, jittered ±25 %
    # attempt 2 began only after the backoff, then waited its full lock_timeout again
    assert when(blocked[1]) - when(blocked[0]) >= blocked[0]["next_delay_s"] + 1.0 - 0.05
    started = events(result, "revision.started")
    assert [e["revision"] for e in started] == ["r0", "r1", "r1", "r1"]
    assert all(e["lock_timeout_s"] == 1.0 for e in started)

    assert not reader.errors, reader.errors
    worst = reader.max_latency()  # over the whole run (the reader started before the runner)
    report(
        reader_max_latency_s=worst,
        reader_queries=len(reader.samples),
        blocker_held_s=held_s,
        runner_s=result.elapsed,
    )
    # readers queued behind the waiting ALTER (the workload is real) ...
    assert worst >= 0.5, f"the reader never queued behind the ALTER (max {worst:.3f} s)"
    # ... but never for longer than lock_timeout, although the app held its lock for longer
    assert worst <= 1.0 + MARGIN_S, f"reader stalled {worst:.3f} s with lock_timeout=1 s"
    assert held_s > 1.0 + MARGIN_S
    result.assert_clean()


def test_contrast_without_lock_timeout_readers_stall_as_long_as_the_app_transaction(
    accounts, project, sessions, reader, runners
):
    """The same workload with MIGRATION_DDL_LOCK_TIMEOUT=0: the bound asserted above fails."""
    project.revision("r1", None, ADD_NOTE)
    blocker = sessions("app-blocker")
    blocker.hold()
    reader.start()
    proc = runners.start(runner_env(accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=0))
    wait_until(lambda: runner_waiting_on_lock(accounts), timeout=45, what="the ALTER waiting")
    time.sleep(3)  # the app transaction stays open 3 s more: the quantity under test
    blocker.commit()
    result = proc.finish(timeout=60)
    reader.stop()

    assert result.code == 0, result.stdout
    assert result.summary["outcome"] == "migrated"
    assert not events(result, "revision.blocked")
    assert has_note_column(accounts)
    worst = reader.max_latency()
    report(reader_max_latency_without_lock_timeout_s=worst)
    assert not reader.errors, reader.errors
    assert worst > 2.0, f"expected the reader stalled behind the ALTER, max {worst:.3f} s"
    assert worst > 1.0 + MARGIN_S  # i.e. the previous test's bound detects a missing lock_timeout
    result.assert_clean()


# --- 2. retries exhausted ------------------------------------------------------------------


def test_blocker_that_never_commits_exhausts_the_retries_naming_it(accounts, project, sessions):
    project.revision("r1", None, 'op.execute("CREATE TABLE audit (rev text)")')
    project.revision("r2", "r1", ADD_NOTE)
    blocker = sessions("app-blocker")
    blocker.hold()
    env = runner_env(
        accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=0.5, MIGRATION_DDL_LOCK_RETRIES=2
    )
    result = run(env, timeout=60)

    assert result.code == ExitCode.MIGRATION_BLOCKED, result.stdout
    assert blocker.in_transaction  # it held its lock for the whole run
    error = result.event("error")
    assert error["error_code"] == "migration_blocked"
    assert error["revision"] == "r2"
    assert error["attempts"] == 2
    assert "app-blocker" in error["message"], error["message"]
    assert f"pid {blocker.pid}" in error["message"], error["message"]
    assert "MIGRATION_DDL_LOCK_RETRIES" in error["message"]
    blocked = events(result, "revision.blocked")
    assert [e["attempt"] for e in blocked] == [1, 2]
    assert blocked[0]["next_delay_s"] is not None and blocked[1]["next_delay_s"] is None
    assert all(e["blockers"][0]["application_name"] == "app-blocker" for e in blocked)
    summary = result.summary
    assert (
        summary["outcome"],
        summary["applied"],
        summary["to_revision"],
        summary["exit_code"],
    ) == ("failed", ["r1"], ["r1"], ExitCode.MIGRATION_BLOCKED)
    assert accounts.version() == ["r1"]  # r1 stays; r2 rolled back
    assert accounts.table_exists("audit") and not has_note_column(accounts)
    assert [e["by"] for e in events(result, "lock.released")] == ["unlock"]
    assert accounts.advisory_locks() == 0
    result.assert_clean()

    blocker.commit()
    again = run(env, timeout=60)
    assert again.code == 0, again.stdout
    assert again.summary["outcome"] == "migrated" and again.summary["applied"] == ["r2"]
    assert not events(again, "revision.blocked")
    assert accounts.version() == ["r2"] and has_note_column(accounts)
    again.assert_clean()


# --- 3. per-revision options and statement_timeout -----------------------------------------


def test_revision_opting_out_of_lock_timeout_waits_for_the_blocker(
    accounts, project, sessions, runners
):
    with_options(project.revision("r1", None, ADD_NOTE), '{"lock_timeout": 0}')
    blocker = sessions("app-blocker")
    blocker.hold()
    proc = runners.start(runner_env(accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=0.5))
    # waiting 3x longer than the global lock_timeout proves the override is in force
    wait_until(
        lambda: runner_waiting_on_lock(accounts, for_s=1.5),
        timeout=45,
        what="the runner waiting on the table lock for 1.5 s",
    )
    ((_pid, query),) = runner_waiting_on_lock(accounts)
    assert "ALTER TABLE accounts" in query
    blocker.commit()
    result = proc.finish(timeout=60)

    assert result.code == 0, result.stdout
    assert not events(result, "revision.blocked")
    started = result.event("revision.started")
    assert (started["revision"], started["lock_timeout_s"], started["statement_timeout_s"]) == (
        "r1",
        0.0,
        0.0,
    )
    assert result.summary["outcome"] == "migrated"
    assert has_note_column(accounts)
    result.assert_clean()


def test_statement_timeout_fails_a_slow_revision_unless_it_opts_out(database, project):
    body = """
    op.execute("CREATE TABLE slept (x int)")
    op.execute("SELECT pg_sleep(3)")
    """
    path = project.revision("r1", None, body)
    env = runner_env(database, project, MIGRATION_STATEMENT_TIMEOUT=1)
    failed = run(env, timeout=60)

    assert failed.code == ExitCode.MIGRATION_FAILED, failed.stdout
    error = failed.event("error")
    assert error["revision"] == "r1" and error["error_class"] == "QueryCanceled"
    assert "MIGRATION_STATEMENT_TIMEOUT" in error["message"], error["message"]
    assert failed.event("revision.started")["statement_timeout_s"] == 1.0
    assert database.version() == [] and not database.table_exists("slept")
    assert database.advisory_locks() == 0
    failed.assert_clean()

    with_options(path, '{"statement_timeout": 0}')
    passed = run(env, timeout=60)
    assert passed.code == 0, passed.stdout
    assert passed.event("revision.started")["statement_timeout_s"] == 0.0
    assert passed.event("revision.applied")["duration_ms"] >= 3000
    assert database.version() == ["r1"] and database.table_exists("slept")
    report(statement_timeout_failed_run_s=failed.elapsed, opted_out_run_s=passed.elapsed)
    passed.assert_clean()


INVALID_OPTIONS = ['{"lock_timeot": 0}', '{"lock_timeout": -1}', '{"statement_timeout": "5s"}']


def test_invalid_revision_options_fail_before_connecting(tmp_path, runners):
    # nothing listens there: a runner that connected first would log db.connect_failed
    url = pg_url("postgres", "pw", "127.0.0.1", free_port(), "postgres", scheme="postgresql")
    cases = []
    for index, options in enumerate(INVALID_OPTIONS):  # one project each, run concurrently
        project = Project(tmp_path / f"p{index}")
        project.revision("r0", None, "pass")
        bad = with_options(project.revision("r1", "r0", ADD_NOTE), options)
        env = runner_env(None, project, DATABASE_URL=url, MIGRATION_DB_WAIT_TIMEOUT=5)
        cases.append((options, bad, runners.start(env)))

    for options, bad, proc in cases:
        result = proc.finish(timeout=60)
        assert result.code == ExitCode.SCRIPTS_INVALID, (options, result.stdout)
        error = result.event("error")
        assert error["error_code"] == "scripts_invalid"
        assert str(bad) in error["message"] and "migration_runner" in error["message"], options
        assert not [e for e in result.events if e["event"].startswith(("db.", "lock."))], options
        assert result.summary["connect_attempts"] == 0
        result.assert_clean("pw@")


# --- 4. CREATE INDEX CONCURRENTLY ----------------------------------------------------------


def test_create_index_concurrently_in_an_autocommit_block(accounts, project):
    project.revision("r1", None, CIC)
    result = run(runner_env(accounts, project), timeout=60)

    assert result.code == 0, result.stdout
    assert result.summary["outcome"] == "migrated" and result.summary["applied"] == ["r1"]
    assert index_valid(accounts, "ix_accounts_name") is True
    assert accounts.version() == ["r1"]
    assert accounts.advisory_locks() == 0
    result.assert_clean()


def test_five_runners_race_on_a_cic_revision_without_deadlock(accounts, project, sessions, runners):
    """While the holder's CIC waits for an old snapshot (a report transaction the test holds),
    the four others wait for the migration lock. Had a waiter held a snapshot while waiting,
    the CIC could never finish once the report ends (or PostgreSQL would detect a deadlock)."""
    project.revision("r1", None, CIC)
    report_tx = report_transaction(sessions)
    # lock_timeout above the test's bounded waits: the CIC must wait for the report, not fail
    # (with a lock_timeout shorter than the report, see the xfail test below)
    env = runner_env(accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=60)
    procs = [runners.start(env) for _ in range(5)]
    backend = {
        proc.wait_for_event("db.connected", timeout=45)["backend_pid"]: proc for proc in procs
    }

    def cic_waiting() -> list[tuple[Any, ...]]:
        return accounts.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'CREATE INDEX CONCURRENTLY%%' "
            "AND wait_event_type = 'Lock'"
        )

    wait_until(cic_waiting, timeout=45, what="the holder's CREATE INDEX CONCURRENTLY waiting")
    ((holder_pid,),) = cic_waiting()
    holder = backend[holder_pid]
    waiters = [proc for proc in procs if proc is not holder]
    for proc in waiters:
        proc.wait_for_event("lock.waiting", timeout=45)
    assert index_valid(accounts, "ix_accounts_name") is False  # mid-build
    report_tx.commit()
    results = [proc.finish(timeout=60) for proc in procs]

    assert [r.code for r in results] == [0] * 5, [r.stdout for r in results if r.code]
    outcomes = sorted(r.summary["outcome"] for r in results)
    assert outcomes == ["migrated"] + ["up_to_date"] * 4
    assert results[procs.index(holder)].summary["outcome"] == "migrated"
    for proc in waiters:  # each waited, then took the lock and found nothing to do
        result = results[procs.index(proc)]
        assert result.event("upgrade.up_to_date")["locked"] is True
        assert result.event("lock.acquired")["waited_ms"] > 0
    assert index_valid(accounts, "ix_accounts_name") is True
    assert accounts.version() == ["r1"]
    assert accounts.advisory_locks() == 0
    for result in results:
        result.assert_clean()


def test_cic_delayed_past_lock_timeout_by_a_long_transaction_completes_once_it_ends(
    accounts, project, sessions, runners
):
    project.revision("r1", None, CIC)
    report_tx = report_transaction(sessions)
    proc = runners.start(
        runner_env(accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=1, MIGRATION_DDL_LOCK_RETRIES=5)
    )
    cic_then_report_ends(accounts, report_tx, proc)
    result = proc.finish(timeout=60)

    assert result.code == 0, result.stdout
    assert index_valid(accounts, "ix_accounts_name") is True
    assert accounts.version() == ["r1"]
    result.assert_clean()


def test_cic_revision_opting_out_of_lock_timeout_waits_out_a_long_transaction(
    accounts, project, sessions, runners
):
    """Today's workaround for the bug above: the CIC revision sets ``lock_timeout: 0``."""
    with_options(project.revision("r1", None, CIC), '{"lock_timeout": 0}')
    report_tx = report_transaction(sessions)
    proc = runners.start(
        runner_env(accounts, project, MIGRATION_DDL_LOCK_TIMEOUT=1, MIGRATION_DDL_LOCK_RETRIES=5)
    )
    waiting = cic_then_report_ends(accounts, report_tx, proc)
    result = proc.finish(timeout=60)

    assert result.code == 0, result.stdout
    assert [q.split(" ON ")[0] for _pid, q in waiting] == [
        "CREATE INDEX CONCURRENTLY ix_accounts_name"
    ]
    assert not events(result, "revision.blocked")
    assert result.event("revision.started")["lock_timeout_s"] == 0.0
    assert index_valid(accounts, "ix_accounts_name") is True
    assert accounts.version() == ["r1"]
    result.assert_clean()


# --- which limits each statement runs under -------------------------------------------------


def test_limits_are_the_revisions_own_and_none_in_an_autocommit_block():
    limits = Timeouts(5.0, 30.0)
    assert limits_for(limits, autocommit=False) == limits
    assert limits_for(limits, autocommit=True) == NO_LIMITS
    assert limits_for(None, autocommit=False) is None  # outside revisions: no opinion


SEEN = (
    "op.execute(\"INSERT INTO seen (tag, lock, stmt) VALUES ('{tag}', "
    "current_setting('lock_timeout'), current_setting('statement_timeout'))\")"
)


def test_each_statement_runs_under_its_revisions_limits_across_overrides_and_autocommit_blocks(
    database, project
):
    project.revision(
        "r1",
        None,
        "op.execute('CREATE TABLE seen (n serial, tag text, lock text, stmt text)')\n"
        + SEEN.format(tag="r1"),
    )
    with_options(
        project.revision("r2", "r1", SEEN.format(tag="r2")),
        '{"lock_timeout": 0, "statement_timeout": 60}',
    )
    project.revision(
        "r3",
        "r2",
        "\n".join(
            [
                SEEN.format(tag="r3 before"),
                "with op.get_context().autocommit_block():",
                "    " + SEEN.format(tag="r3 autocommit"),
                SEEN.format(tag="r3 after"),
            ]
        ),
    )
    result = run(
        runner_env(database, project, MIGRATION_DDL_LOCK_TIMEOUT=2, MIGRATION_STATEMENT_TIMEOUT=0)
    )
    assert result.code == 0, result.stdout
    assert database.query("SELECT tag, lock, stmt FROM seen ORDER BY n") == [
        ("r1", "2s", "0"),
        ("r2", "0", "1min"),
        ("r3 before", "2s", "0"),
        ("r3 autocommit", "0", "0"),
        ("r3 after", "2s", "0"),
    ]
