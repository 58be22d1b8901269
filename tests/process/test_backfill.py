"""backfill() through real runner processes on real PostgreSQL: batches committed one by
one, SIGTERM between them, the revision applied only once the backfill finished, and a
writer on the same table never held up for longer than a batch."""

from __future__ import annotations

import random
import signal
import threading
import time

from runner.errors import ExitCode
from tests.support.helpers import Running, run, runner_env

ROWS = 300_000
TABLE = (
    "op.execute('CREATE TABLE calls (id bigint PRIMARY KEY, old_name text, new_name text)')\n"
    "op.execute(\"INSERT INTO calls (id, old_name) SELECT g, 'caller ' || g "
    f'FROM generate_series(1, {ROWS}) g")'
)
BACKFILL = (
    "from runner import backfill\n"
    "backfill('calls', set='new_name = old_name', where='new_name IS NULL', key='id', "
    "batch_size={batch_size})"
)


def backfilled(database) -> int:
    return database.query("SELECT count(*) FROM calls WHERE new_name IS NOT NULL")[0][0]


class Writer:
    """An app writing to random rows of ``calls`` while the backfill runs: its slowest write."""

    def __init__(self, database) -> None:
        self.conn = database.connect()
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            self.conn.execute(
                "UPDATE calls SET old_name = old_name WHERE id = %s", (random.randint(1, ROWS),)
            )
            self.latencies.append(time.monotonic() - began)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.conn.close()


def test_a_backfill_stopped_by_sigterm_keeps_its_batches_and_the_next_run_finishes_it(
    database, project
):
    project.revision("t1", None, TABLE)
    project.revision("t2", "t1", BACKFILL.format(batch_size=1000))
    env = runner_env(database, project)
    assert run(env, "upgrade", "t1").code == 0

    first = Running(env, "upgrade")
    first.wait_for_event("backfill.progress", timeout=60)
    first.signal(signal.SIGTERM)
    stopped = first.finish()
    stopped.check_log_contract()
    assert stopped.code == ExitCode.INTERRUPTED
    [record] = stopped.summary["backfills"]
    assert 0 < record["rows_done"] < ROWS and not record["finished"]
    assert record["rows_done"] == backfilled(database)  # every batch reported is committed
    assert f"stopped after {record['rows_done']} rows" in stopped.event("error")["message"]
    assert database.version() == ["t1"] and database.advisory_locks() == 0
    assert stopped.summary["applied"] == []

    with Writer(database) as writer:
        resumed = run(env, "upgrade", timeout=300)
    resumed.check_log_contract()
    assert resumed.code == 0, resumed.stdout
    [again] = resumed.summary["backfills"]
    assert again["finished"] and again["rows_done"] == ROWS - record["rows_done"]
    assert backfilled(database) == ROWS and database.version() == ["t2"]
    assert resumed.summary["applied"] == ["t2"]
    progress = [e for e in resumed.events if e["event"] == "backfill.progress"]
    assert progress[-1]["finished"] and progress[-1]["rows_done"] == again["rows_done"]
    # the app was never held up for longer than one batch (plus scheduling on a busy box)
    assert len(writer.latencies) > 50
    assert max(writer.latencies) * 1000 <= again["batch_ms_max"] + 500, (
        max(writer.latencies),
        again,
    )


def test_offline_sql_renders_a_backfill_as_its_update(database, project):
    project.revision("t1", None, TABLE)
    project.revision("t2", "t1", BACKFILL.format(batch_size=10))
    result = run(runner_env(database, project), "sql", "t1:t2")
    assert result.code == 0, result.stderr
    assert "UPDATE calls SET new_name = old_name WHERE new_name IS NULL" in result.stdout


def test_the_ddl_before_a_backfill_is_committed_before_its_first_batch(database, project):
    project.revision("t1", None, TABLE.replace(str(ROWS), "5000"))
    project.revision(
        "t2",
        "t1",
        "op.add_column('calls', sa.Column('region', sa.Text()))\n"
        "from runner import backfill\n"
        "backfill('calls', set=\"region = 'eu'\", where='region IS NULL', batch_size=100, "
        "pause=0.05)",
    )
    env = runner_env(database, project)
    assert run(env, "upgrade", "t1").code == 0
    running = Running(env, "upgrade")
    running.wait_for_event("backfill.progress", timeout=60)
    # another session sees the column and writes the table while the backfill runs
    with database.connect() as conn:
        conn.execute("SET lock_timeout = '2s'")
        conn.execute("UPDATE calls SET region = 'us' WHERE id = 5000")
    assert database.version() == ["t1"]  # not applied until the backfill finished
    result = running.finish()
    assert result.code == 0, result.stdout
    assert database.query("SELECT region, count(*) FROM calls GROUP BY 1 ORDER BY 1") == [
        ("eu", 4999),
        ("us", 1),
    ]
    assert database.version() == ["t2"]


def test_a_failed_batch_keeps_the_batches_before_it_and_leaves_the_revision_pending(
    database, project
):
    project.revision("t1", None, TABLE.replace(str(ROWS), "5000"))
    project.revision(
        "t2",
        "t1",
        "from runner import backfill\n"
        "backfill('calls', set='new_name = (1 / (id - 2500))::text', where='new_name IS NULL', "
        "batch_size=1000)",
    )
    env = runner_env(database, project)
    assert run(env, "upgrade", "t1").code == 0
    result = run(env, "upgrade")
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED
    error = result.event("error")
    assert "division by zero" in error["message"] and "after 2000 rows" in error["message"]
    assert backfilled(database) == 2000 and database.version() == ["t1"]
    assert result.summary["backfills"][0]["rows_done"] == 2000


def test_a_batch_waits_for_a_row_lock_no_longer_than_the_runners_lock_timeout(database, project):
    project.revision("t1", None, TABLE.replace(str(ROWS), "5000"))
    project.revision("t2", "t1", BACKFILL.format(batch_size=1000))
    env = runner_env(database, project, MIGRATION_DDL_LOCK_TIMEOUT="1")
    assert run(env, "upgrade", "t1").code == 0
    with database.connect() as app:
        app.execute("BEGIN")
        app.execute("UPDATE calls SET old_name = 'busy' WHERE id = 3500")  # held, uncommitted
        result = run(env, "upgrade", timeout=60)
        app.execute("ROLLBACK")
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    assert "lock_timeout" in result.event("error")["message"]
    assert backfilled(database) == 3000 and database.version() == ["t1"]
    assert run(env, "upgrade").code == 0 and backfilled(database) == 5000


def test_a_bad_argument_is_the_revisions_mistake_not_the_runners(database, project):
    project.revision("t1", None, TABLE.replace(str(ROWS), "10"))
    project.revision(
        "t2", "t1", "from runner import backfill\nbackfill('calls; --', set='a = 1', where='true')"
    )
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    assert "is not a table or column name" in result.event("error")["message"]
    assert database.version() == ["t1"]


def test_rows_a_walk_by_key_cannot_reach_fail_the_revision_not_reported_finished(database, project):
    """Found by an attack on issue 24: with NULLs in the key column the walk skipped those
    rows, reported ``finished`` and applied the revision, leaving rows never backfilled."""
    project.revision(
        "t1",
        None,
        "op.execute('CREATE TABLE nk (id bigint, v int)')\n"
        "op.execute('INSERT INTO nk SELECT CASE WHEN g % 3 = 0 THEN NULL ELSE g END, NULL "
        "FROM generate_series(1, 50) g')",
    )
    project.revision(
        "t2",
        "t1",
        "from runner import backfill\n"
        "backfill('nk', set='v = 1', where='v IS NULL', key='id', batch_size=4)",
    )
    env = runner_env(database, project)
    result = run(env, "upgrade")
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    assert "16 row(s) still to do have a NULL id" in result.event("error")["message"]
    assert database.version() == ["t1"]
    assert not result.summary["backfills"][0].get("finished")


def test_a_revision_failing_after_its_backfill_says_what_stays_and_a_fixed_rerun_finishes(
    database, project
):
    """Found in issue 21: a revision whose later statement failed after its backfill()
    finished was reported "rolled back", "after 0 rows", though 5000 rows stayed committed."""
    project.revision("t1", None, TABLE.replace(str(ROWS), "5000"))
    body = (
        "op.add_column('calls', sa.Column('region', sa.Text()))\n"
        + BACKFILL.format(batch_size=1000)
        + "\nop.execute('CREATE INDEX calls_new_name ON calls (new_name)')\n"
        "op.execute('SELECT 1 / 0')"
    )
    path = project.revision("t2", "t1", body)
    env = runner_env(database, project)
    assert run(env, "upgrade", "t1").code == 0
    result = run(env, "upgrade")
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    error = result.event("error")
    message = error["message"]
    assert "failed and was rolled back" not in message and "after 0 rows" not in message
    assert "NOT fully rolled back" in message
    assert "5000 rows of calls in 6 batches" in message, message
    assert error["committed_statements"] == ["ALTER TABLE calls ADD COLUMN region TEXT"]
    assert error["backfills_kept"] == [
        {"table": "calls", "rows_done": 5000, "batches": 6, "finished": True}
    ]
    assert error["rolled_back_statements"] == [
        "CREATE INDEX calls_new_name ON calls (new_name)",
        "SELECT 1 / 0",
    ]
    assert "t2 stays pending" in message and "run again" in message
    # what the summary records: the revision's committed part, and nothing applied
    assert result.summary["applied"] == [] and result.summary["to_revision"] == ["t1"]
    assert result.summary["not_rolled_back"] == {
        "revision": "t2",
        "direction": "upgrade",
        "committed_statements": ["ALTER TABLE calls ADD COLUMN region TEXT"],
        "backfills": error["backfills_kept"],
    }
    assert backfilled(database) == 5000 and database.version() == ["t1"]
    assert not database.query("SELECT to_regclass('calls_new_name')")[0][0]

    # the documented recovery: make what committed safe to run again, fix, run again
    path.write_text(
        path.read_text()
        .replace(
            "op.add_column('calls', sa.Column('region', sa.Text()))",
            "op.execute('ALTER TABLE calls ADD COLUMN IF NOT EXISTS region text')",
        )
        .replace("op.execute('SELECT 1 / 0')", "pass")
    )
    again = run(env, "upgrade")
    again.check_log_contract()
    assert again.code == 0, again.stdout
    assert again.summary["backfills"][0]["rows_done"] == 0
    assert again.summary["backfills"][0]["finished"]
    assert (
        database.version() == ["t2"]
        and database.query("SELECT to_regclass('calls_new_name')")[0][0]
    )


REVERSE = (
    "from runner import backfill\n"
    "backfill('calls', set='old_name = new_name', where='old_name IS NULL', key='id', "
    "batch_size=100, pause=0.05)"
)


def test_a_downgrade_stopped_in_its_backfill_says_the_revision_stays_applied(database, project):
    """Found in issue 21: a downgrade stopped between its backfill's batches said the
    revision was "not applied" although it stays applied and some batches committed."""
    project.revision(
        "t1",
        None,
        "op.execute('CREATE TABLE calls (id bigint PRIMARY KEY, old_name text, new_name text)')\n"
        "op.execute(\"INSERT INTO calls (id, new_name) SELECT g, 'caller ' || g "
        'FROM generate_series(1, 5000) g")',
    )
    project.revision("t2", "t1", "pass", downgrade=REVERSE)
    env = runner_env(database, project)
    assert run(env, "upgrade").code == 0

    first = Running(env, "downgrade", "t1")
    first.wait_for_event("backfill.progress", timeout=60)
    first.signal(signal.SIGTERM)
    stopped = first.finish()
    stopped.check_log_contract()
    assert stopped.code == ExitCode.INTERRUPTED, stopped.stdout
    message = stopped.event("error")["message"]
    assert "not applied" not in message and "pending" not in message, message
    assert "t2 stays applied (not reverted)" in message, message
    done = database.query("SELECT count(*) FROM calls WHERE old_name IS NOT NULL")[0][0]
    [record] = stopped.summary["backfills"]
    assert 0 < record["rows_done"] == done < 5000 and not record["finished"]
    assert stopped.summary["not_rolled_back"]["direction"] == "downgrade"
    assert database.version() == ["t2"] and database.advisory_locks() == 0

    resumed = run(env, "downgrade", "t1", timeout=120)
    resumed.check_log_contract()
    assert resumed.code == 0, resumed.stdout
    assert resumed.summary["backfills"][0]["rows_done"] == 5000 - done
    assert database.version() == ["t1"]


def test_a_downgrade_failing_after_its_backfill_says_the_revision_stays_applied(database, project):
    project.revision(
        "t1",
        None,
        "op.execute('CREATE TABLE calls (id bigint PRIMARY KEY, old_name text, new_name text)')\n"
        "op.execute(\"INSERT INTO calls (id, new_name) SELECT g, 'caller ' || g "
        'FROM generate_series(1, 500) g")',
    )
    project.revision("t2", "t1", "pass", downgrade=REVERSE + "\nop.execute('SELECT 1 / 0')")
    env = runner_env(database, project)
    assert run(env, "upgrade").code == 0
    result = run(env, "downgrade", "t1")
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    message = result.event("error")["message"]
    assert "failed and was rolled back" not in message and "not applied" not in message
    assert "500 rows of calls in 6 batches" in message and "t2 stays applied" in message
    assert database.version() == ["t2"]


def test_progress_on_a_table_never_analyzed_counts_the_rows_to_do(database, project):
    """Found in issue 21: without statistics (reltuples -1) the planner guessed a handful of
    rows, and the progress said 0 left (100 %) from the first event on."""
    no_autoanalyze = "\nop.execute('ALTER TABLE calls SET (autovacuum_enabled = false)')"
    project.revision("t1", None, TABLE.replace(str(ROWS), "5000") + no_autoanalyze)
    project.revision(
        "t2",
        "t1",
        BACKFILL.format(batch_size=100).replace("batch_size=100", "batch_size=100, pause=0.05"),
    )
    env = runner_env(database, project)
    assert run(env, "upgrade", "t1").code == 0
    assert database.query("SELECT reltuples FROM pg_class WHERE relname = 'calls'")[0][0] < 0
    result = run(env, "upgrade", timeout=120)
    result.check_log_contract()
    assert result.code == 0, result.stdout
    progress = [e for e in result.events if e["event"] == "backfill.progress"]
    first = progress[0]
    assert not first.get("finished"), result.stdout
    assert first["rows_done"] + first["rows_left_estimate"] == 5000, first
    assert first["rows_estimate_source"] == "counted"
