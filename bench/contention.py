"""Scenario 7, contention: what a revision that needs an ACCESS EXCLUSIVE lock costs a busy
app while a long transaction holds its table, and how soon it gets through once that ends
(issue 27).

The app reads and writes ``calls`` every 5 ms (one session, alternating a SELECT and an
INSERT, carrying on after a failed query and counting it) and the bench records each query's
latency; a query that stalls stands for the requests a steady load would have sent meanwhile
(each counted with the part of the stall it would have waited: HdrHistogram's
expected-interval correction), so that a stall of seconds weighs in the percentiles as it
does for a real app's users. A blocker transaction reads ``calls``
and stays open (ACCESS SHARE). The migration (``ALTER TABLE calls ADD COLUMN``) is started;
once its ALTER waits on the lock, the blocker stays open for the blocker's length more, then
commits. Per blocker length, side by side:

- ``alembic``: plain ``alembic upgrade head`` (no lock_timeout: the ALTER waits in the lock
  queue and every app query queues behind it);
- ``runner-old``: the runner with the old default (``MIGRATION_DDL_LOCK_TIMEOUT=5``,
  ``MIGRATION_DDL_LOCK_RETRIES=5``: 5 s attempts, pauses 1, 2, 4, 8 s);
- ``runner``: the runner with its default lock schedule (escalating from 100 ms).

Both tools run from the bench's runtime virtualenv (``_bench.runtime_venv``: made as the
image makes it): the runtime dependency set as deployed, not the development environment.

    uv run --group bench python bench/contention.py [--smoke|--quick] [--set blockers=0.5,4]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from _bench import (
    Bench,
    Command,
    Failed,
    Section,
    Table,
    connect,
    ms,
    percentile,
    runner_env,
    standalone,
)

from devtools.busy_app import BusyApp
from devtools.projects import ENV_PY

SIZES = {
    "smoke": {"blockers": (0.3,), "app_every_ms": 5.0, "baseline_s": 1.0},
    "full": {"blockers": (0.5, 4.0, 60.0), "app_every_ms": 5.0, "baseline_s": 10.0},
}
#: quick: the 60 s blocker shortened to 20 s (said so in the report)
SIZES["quick"] = dict(SIZES["full"], blockers=(0.5, 4.0, 20.0))
TOOLS = {
    "alembic": "plain `alembic upgrade head`",
    "runner-old": "runner, old default: MIGRATION_DDL_LOCK_TIMEOUT=5, MIGRATION_DDL_LOCK_RETRIES=5",
    "runner": "runner, default lock schedule (escalating from 100 ms)",
}
APP_MAX_TARGET_S = 0.150
#: the app's p99 during the migration, at most this much above its p99 alone: one attempt's
#: lock_timeout under the default schedule (100 ms) plus slack for a shared machine
APP_P99_SLACK_S = 0.150
THROUGH_TARGET_S = 1.0
REVISION = '''"""add a note to calls"""
from alembic import op

revision = "c1"
down_revision = None


def upgrade():
    op.execute("ALTER TABLE calls ADD COLUMN note text")
'''


class App(BusyApp):
    """The busy app, carrying on after a failed query (counted, with its start time)."""

    def __init__(self, conn: psycopg.Connection[Any], every_s: float) -> None:
        super().__init__(conn, every_s, carry_on=True)

    def window(self, start: float, end: float) -> tuple[list[float], int]:
        """The latencies of the requests of a steady load between ``start`` and ``end`` (each
        query that took longer than the interval also stands for the requests that would have
        been sent while it ran, each with what it would have waited), and the failed queries."""
        found = []
        for latency in self.between(start, end):
            found.append(latency)
            waited = latency - self.every_s
            while waited > 0:
                found.append(waited)
                waited -= self.every_s
        return found, sum(1 for at in self.failed_at if start <= at <= end)


def write_project(root: Path) -> Path:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "versions" / "c1.py").write_text(REVISION)
    ini = root / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    return ini


def exited(started: Any) -> bool:
    """Whether the process has exited, without reaping it (``reap`` does, for its CPU time)."""
    found = os.waitid(os.P_PID, started.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return found is not None


def alter_waiting(monitor: psycopg.Connection[Any]) -> bool:
    return bool(
        monitor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE calls%%'"
        ).fetchone()[0]  # type: ignore[index]
    )


def one_cell(
    bench: Bench, ini: Path, tool: str, blocker_s: float, every_s: float
) -> dict[str, Any]:
    """One migration against the busy table with one blocker; its figures."""
    db = bench.create_db(f"contention_{tool.replace('-', '_')}_{int(blocker_s * 10)}")
    with connect(bench.cluster, bench.password, db) as setup:
        setup.execute("CREATE TABLE calls (id bigserial PRIMARY KEY, caller text NOT NULL)")
        setup.execute("INSERT INTO calls (caller) SELECT 'seed' FROM generate_series(1, 10000)")
    env = runner_env(bench.url(db), ini)
    if tool == "runner-old":
        env.update(MIGRATION_DDL_LOCK_TIMEOUT="5", MIGRATION_DDL_LOCK_RETRIES="5")
    argv = (
        [bench.venv().bin("alembic"), "-c", str(ini), "upgrade", "head"]
        if tool == "alembic"
        else [bench.python, "-m", "runner", "upgrade"]
    )
    app_conn = connect(bench.cluster, bench.password, db)
    blocker = connect(bench.cluster, bench.password, db)
    monitor = connect(bench.cluster, bench.password, db)
    try:
        app = App(app_conn, every_s).start()
        blocker.autocommit = False
        blocker.execute("SELECT count(*) FROM calls").fetchone()
        time.sleep(0.2)  # a baseline of app latencies before the migration
        started = time.monotonic()
        proc = bench.start(Command(tool, argv, env, bench.tmp))
        while not alter_waiting(monitor):
            if exited(proc) or time.monotonic() - started > 120:
                raise Failed(f"{tool}: the ALTER never waited on the lock")
            time.sleep(0.005)
        waiting_at = time.monotonic()
        while time.monotonic() < waiting_at + blocker_s and not exited(proc):
            time.sleep(0.005)
        blocker.commit()
        released = time.monotonic()
        done = proc.reap(bench.timeout)
        ended = started + done.seconds
        time.sleep(0.1)
        app.stop()
    finally:
        for conn in (app_conn, blocker, monitor):
            conn.close()
        bench.drop_db(db)
    latencies, errors = app.window(started, ended)
    summary = done.event("summary") if tool != "alembic" else {}
    return {
        "code": done.returncode,
        "outcome": summary.get("outcome", "migrated" if done.returncode == 0 else "failed"),
        "total_s": done.seconds,
        "through_s": ended - released if done.returncode == 0 else None,
        "app_max_s": max(latencies, default=0.0),
        "app_p99_s": percentile(latencies, 99) if latencies else 0.0,
        "app_p50_s": percentile(latencies, 50) if latencies else 0.0,
        "queries": len(app.between(started, ended)),
        "requests": len(latencies),
        "errors": errors,
        "first_error": app.errors[0] if app.errors else "",
        "attempts": summary.get("attempts"),
        "blocked_s": released - waiting_at,
        "tail": done.tail() if done.returncode not in (0, 9) else "",
    }


def baseline(bench: Bench, seconds: float, every_s: float) -> tuple[float, float, float]:
    """The app alone, no migration and no blocker, for ``seconds``: its max and p99 (what
    the machine's load costs it) and p50."""
    db = bench.create_db("contention_baseline")
    with connect(bench.cluster, bench.password, db) as setup:
        setup.execute("CREATE TABLE calls (id bigserial PRIMARY KEY, caller text NOT NULL)")
        setup.execute("INSERT INTO calls (caller) SELECT 'seed' FROM generate_series(1, 10000)")
    conn = connect(bench.cluster, bench.password, db)
    try:
        app = App(conn, every_s).start()
        began = time.monotonic()
        time.sleep(seconds)
        app.stop()
    finally:
        conn.close()
        bench.drop_db(db)
    if app.errors:
        raise Failed(f"the app alone failed: {app.errors[0]}")
    latencies, _errors = app.window(began, time.monotonic())
    return max(latencies, default=0.0), percentile(latencies, 99), percentile(latencies, 50)


def run(
    bench: Bench, out: Path, blockers: tuple[float, ...], app_every_ms: float, baseline_s: float
) -> Section:
    del out  # no plots
    section = Section("7. Contention: a busy table, a long transaction, an ADD COLUMN")
    ini = write_project(bench.tmp / "contention")
    alone = baseline(bench, baseline_s, app_every_ms / 1000)
    section.notes.append(
        f"the app alone (no migration, no blocker) for {baseline_s:g} s before the runs: "
        f"p50 {ms(alone[2])}, p99 {ms(alone[1])}, max {ms(alone[0])}: what the machine's load "
        "costs it"
    )
    rows, cells = [], {}
    for blocker_s in blockers:
        for tool in TOOLS:
            cell = one_cell(bench, ini, tool, blocker_s, app_every_ms / 1000)
            if cell["tail"]:
                raise Failed(f"{tool} with a {blocker_s:g} s blocker failed:\n{cell['tail']}")
            cells[(tool, blocker_s)] = cell
            rows.append(row(blocker_s, tool, cell))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    section.intro = [
        __doc__.split("\n\n")[1].replace("\n", " "),
        f"The app queries every {app_every_ms:g} ms; the figures are those of the requests",
        "started while the migration process ran (queries the app sent, and the requests a",
        "stalled query stands for). Tools:",
        "; ".join(f"`{k}`: {v}" for k, v in TOOLS.items()) + ".",
        "Both tools ran with the runtime virtualenv's python (see the header).",
    ]
    section.tables.append(
        Table(
            [
                "blocker",
                "tool",
                "app p50",
                "app p99",
                "app max",
                "app errors",
                "app queries (requests)",
                "migration took",
                "done after blocker ended",
                "outcome (exit)",
                "attempts",
            ],
            rows,
        )
    )
    judge(section, blockers, cells, alone)
    if 60.0 not in blockers and max(blockers) > 1:
        section.notes.append(f"quick run: the 60 s blocker was shortened to {max(blockers):g} s")
    errors = [c["first_error"] for c in cells.values() if c["first_error"]]
    if errors:
        section.notes.append(f"the app's first error: `{errors[0][:200]}`")
    return section


def row(blocker_s: float, tool: str, cell: dict[str, Any]) -> list[str]:
    return [
        f"{blocker_s:g} s",
        tool,
        ms(cell["app_p50_s"]),
        ms(cell["app_p99_s"]),
        ms(cell["app_max_s"]),
        str(cell["errors"]),
        f"{cell['queries']} ({cell['requests']})",
        ms(cell["total_s"]),
        ms(cell["through_s"]) if cell["through_s"] is not None else "—",
        f"{cell['outcome']} ({cell['code']})"
        if cell["code"] == 0
        else f"**{cell['outcome']} ({cell['code']})**",
        str(cell["attempts"] or "—"),
    ]


def judge(
    section: Section,
    blockers: tuple[float, ...],
    cells: dict[tuple[str, float], dict[str, Any]],
    alone: tuple[float, float, float],
) -> None:
    new = [cells[("runner", b)] for b in blockers]
    worst_p99 = max(c["app_p99_s"] for c in new)
    alembic_p99 = max(cells[("alembic", b)]["app_p99_s"] for b in blockers)
    errors = sum(c["errors"] for c in new)
    section.target(
        f"app p99 during the migration ≤ its p99 alone + {ms(APP_P99_SLACK_S)}, no app error "
        "(runner's default, every blocker; plain Alembic beside it)",
        f"+{ms(max(0.0, worst_p99 - alone[1]))}, {errors} error(s) "
        f"(plain Alembic: +{ms(max(0.0, alembic_p99 - alone[1]))})",
        worst_p99 <= alone[1] + APP_P99_SLACK_S and errors == 0,
    )
    worst = max(c["app_max_s"] for c in new)
    section.target(
        f"app max ≤ {ms(APP_MAX_TARGET_S)} with the default, every blocker",
        ms(worst),
        worst <= APP_MAX_TARGET_S,
    )
    through = [c["through_s"] for c in new]
    late = max((t for t in through if t is not None), default=float("inf"))
    section.target(
        f"migration done within {THROUGH_TARGET_S:g} s of the blocker ending",
        ms(late) if None not in through else "gave up",
        None not in through and late <= THROUGH_TARGET_S,
    )


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", SIZES, run))
