"""revision.progress from the side watch, against real work (issue 28): an index build on a
few million rows reports its phase and percent; a revision waiting on a lock reports the
wait and the blocker. The interval is 1 s; nothing sleeps for a fixed time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.helpers import Database, Running, run, runner_env, wait_until

ROWS = 3_000_000


@pytest.fixture
def big(database: Database) -> Database:
    with database.connect() as conn:
        conn.execute(
            f"CREATE TABLE big AS SELECT g AS id, md5(g::text) AS name "
            f"FROM generate_series(1, {ROWS}) g"
        )
        conn.execute("VACUUM ANALYZE big")
    return database


@pytest.fixture
def blocker(database: Database) -> Iterator[psycopg.Connection[Any]]:
    with database.connect() as conn:
        conn.execute("CREATE TABLE calls (id bigserial PRIMARY KEY)")
    conn = database.connect(application_name="app-report")
    conn.autocommit = False
    conn.execute("SELECT count(*) FROM calls").fetchone()  # ACCESS SHARE, left open
    yield conn
    conn.close()


def events(result: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in result.events if e["event"] == name]


def test_an_index_build_reports_its_phase_and_percent_every_second(big, project):
    # an expression index: md5 (four times over) of every row while the table is scanned, then
    # a sort: several seconds even on a quiet machine (once over it took 1.9 s in CI)
    project.revision(
        "r1",
        None,
        'op.execute("CREATE INDEX ix_big ON big (md5(md5(md5(md5(name || id::text)))))")',
    )
    result = run(runner_env(big, project, MIGRATION_PROGRESS_INTERVAL=1), timeout=300)

    assert result.code == 0, result.stdout
    progress = events(result, "revision.progress")
    duration_s = result.event("revision.applied")["duration_ms"] / 1000
    print(f"\nmeasured: index build {duration_s:.1f} s, {len(progress)} progress events")
    # one event a second while it runs (half of them at least, on a loaded machine)
    assert len(progress) >= max(2, int(duration_s) // 2), (
        f"{len(progress)} progress events in {duration_s:.1f} s"
    )
    assert [e["elapsed_s"] >= n for n, e in enumerate(progress, 1)] == [True] * len(progress)
    assert all(e["revision"] == "r1" and e["state"] == "active" for e in progress)
    with_percent = [e for e in progress if e.get("percent") is not None]
    assert with_percent, progress
    first = with_percent[0]
    assert first["command"] == "CREATE INDEX" and first["phase"].startswith("building index")
    assert 0 <= first["percent"] <= 100 and first["total"] > 0
    # the events precede the revision's end, and the summary keeps the longest revision
    assert result.events.index(progress[-1]) < result.events.index(result.event("revision.applied"))
    assert result.summary["longest_revision"]["revision"] == "r1"
    assert result.summary["longest_revision"]["duration_ms"] >= 1000 * len(progress)
    result.assert_clean()


def test_no_progress_events_when_the_interval_is_0(big, project):
    project.revision("r1", None, 'op.execute("CREATE INDEX ix_big ON big (md5(name))")')
    result = run(runner_env(big, project, MIGRATION_PROGRESS_INTERVAL=0), timeout=300)
    assert result.code == 0, result.stdout
    assert not events(result, "revision.progress")


def test_a_revision_waiting_on_a_lock_reports_the_wait_and_the_blocker(database, project, blocker):
    path = project.revision("r1", None, 'op.execute("ALTER TABLE calls ADD COLUMN note text")')
    path.write_text(path.read_text() + '\nmigration_runner = {"lock_timeout": 0}\n')
    proc = Running(runner_env(database, project, MIGRATION_PROGRESS_INTERVAL=1))
    try:
        waiting = proc.wait_for_event("revision.progress", timeout=60)
        blocker.commit()
        result = proc.finish(timeout=60)
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
    assert result.code == 0, result.stdout
    assert (waiting["wait_event_type"], waiting["wait_event"]) == ("Lock", "relation")
    ((seen,),) = [waiting["blockers"]]
    assert seen["application_name"] == "app-report"
    assert seen["pid"] == blocker.info.backend_pid
    assert "SELECT count(*) FROM calls" in seen["query"]
    wait_until(lambda: database.advisory_locks() == 0, timeout=10, what="lock released")
