"""Scenario 7, contention: what a revision that needs an ACCESS EXCLUSIVE lock costs a busy
app while a long transaction holds its table, and how soon it gets through once that ends
(issue 27).

The app reads and writes ``calls`` every 5 ms (one session, alternating a SELECT and an
INSERT) and the bench records each query's latency. A blocker transaction reads ``calls``
and stays open (ACCESS SHARE). The migration (``ALTER TABLE calls ADD COLUMN``) is started;
once its ALTER waits on the lock, the blocker stays open for the blocker's length more, then
commits. Per blocker length, side by side:

- ``alembic``: plain ``alembic upgrade head`` (no lock_timeout: the ALTER waits in the lock
  queue and every app query queues behind it);
- ``runner-old``: the runner with the old default (``MIGRATION_DDL_LOCK_TIMEOUT=5``,
  ``MIGRATION_DDL_LOCK_RETRIES=5``: 5 s attempts, pauses 1, 2, 4, 8 s);
- ``runner``: the runner with its default lock schedule (escalating from 100 ms).

Both tools run from a virtualenv made as the image makes it (``uv sync --locked --no-dev
--no-editable --compile-bytecode`` into a temporary directory): the runtime dependency set
as deployed, not the development environment.

    uv run --group bench python bench/contention.py [--smoke|--quick] [--set blockers=0.5,4]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from _bench import ROOT, Bench, Command, Failed, Section, Table, ms, standalone
from _common import connect, percentile, runner_env

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
THROUGH_TARGET_S = 1.0
REVISION = '''"""add a note to calls"""
from alembic import op

revision = "c1"
down_revision = None


def upgrade():
    op.execute("ALTER TABLE calls ADD COLUMN note text")
'''


def deployed_venv(tmp: Path) -> Path:
    """The runtime dependency set as the image installs it, in ``tmp/venv``."""
    venv = tmp / "venv"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(venv))
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["uv", "sync", "--locked", "--no-dev", "--no-editable", "--compile-bytecode", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise Failed(f"uv sync into {venv} failed:\n{proc.stderr[-3000:]}")
    return venv


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
    bench: Bench, venv: Path, ini: Path, tool: str, blocker_s: float, every_s: float
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
        [str(venv / "bin" / "alembic"), "-c", str(ini), "upgrade", "head"]
        if tool == "alembic"
        else [str(venv / "bin" / "python"), "-m", "runner", "upgrade"]
    )
    app_conn = connect(bench.cluster, bench.password, db)
    blocker = connect(bench.cluster, bench.password, db)
    monitor = connect(bench.cluster, bench.password, db)
    try:
        app = BusyApp(app_conn, every_s).start()
        blocker.autocommit = False
        blocker.execute("SELECT count(*) FROM calls").fetchone()
        time.sleep(0.2)  # a baseline of app latencies before the migration
        started = time.monotonic()
        proc = bench.start(Command(tool, argv, env, ini.parent))
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
    if app.errors:
        raise Failed(f"{tool}: the app failed: {app.errors[0]}")
    latencies = app.between(started, ended)
    summary = done.event("summary") if tool != "alembic" else {}
    return {
        "code": done.returncode,
        "total_s": done.seconds,
        "through_s": ended - released if done.returncode == 0 else None,
        "app_max_s": max(latencies, default=0.0),
        "app_p99_s": percentile(latencies, 99) if latencies else 0.0,
        "queries": len(latencies),
        "attempts": summary.get("attempts"),
        "blocked_s": released - waiting_at,
        "tail": done.tail() if done.returncode not in (0, 9) else "",
    }


def baseline(bench: Bench, seconds: float, every_s: float) -> tuple[float, float]:
    """The app alone, no migration and no blocker, for ``seconds``: its max and p99 (what
    the machine's load costs it)."""
    db = bench.create_db("contention_baseline")
    with connect(bench.cluster, bench.password, db) as setup:
        setup.execute("CREATE TABLE calls (id bigserial PRIMARY KEY, caller text NOT NULL)")
        setup.execute("INSERT INTO calls (caller) SELECT 'seed' FROM generate_series(1, 10000)")
    conn = connect(bench.cluster, bench.password, db)
    try:
        app = BusyApp(conn, every_s).start()
        time.sleep(seconds)
        app.stop()
    finally:
        conn.close()
        bench.drop_db(db)
    latencies = app.latencies
    return max(latencies, default=0.0), percentile(latencies, 99)


def run(
    bench: Bench, out: Path, blockers: tuple[float, ...], app_every_ms: float, baseline_s: float
) -> Section:
    del out  # no plots
    section = Section("7. Contention: a busy table, a long transaction, an ADD COLUMN")
    venv = deployed_venv(bench.tmp)
    ini = write_project(bench.tmp / "contention")
    alone = baseline(bench, baseline_s, app_every_ms / 1000)
    section.notes.append(
        f"the app alone (no migration, no blocker) for {baseline_s:g} s before the runs: "
        f"max {ms(alone[0])}, p99 {ms(alone[1])}: what the machine's load costs it"
    )
    rows, cells = [], {}
    for blocker_s in blockers:
        for tool in TOOLS:
            cell = one_cell(bench, venv, ini, tool, blocker_s, app_every_ms / 1000)
            if cell["tail"]:
                raise Failed(f"{tool} with a {blocker_s:g} s blocker failed:\n{cell['tail']}")
            cells[(tool, blocker_s)] = cell
            rows.append(
                [
                    f"{blocker_s:g} s",
                    tool,
                    ms(cell["app_max_s"]),
                    ms(cell["app_p99_s"]),
                    str(cell["queries"]),
                    ms(cell["total_s"]),
                    ms(cell["through_s"]) if cell["through_s"] is not None else "—",
                    "0" if cell["code"] == 0 else f"**{cell['code']}** (gave up)",
                    str(cell["attempts"] or "—"),
                ]
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    section.intro = [
        __doc__.split("\n\n")[1].replace("\n", " "),
        f"The app queries every {app_every_ms:g} ms; latencies are those of queries started",
        "while the migration process ran. Tools:",
        "; ".join(f"`{k}`: {v}" for k, v in TOOLS.items()) + ".",
        "Both tools ran from a virtualenv made with `uv sync --locked --no-dev --no-editable",
        "--compile-bytecode` (the runtime dependency set as deployed).",
    ]
    section.tables.append(
        Table(
            [
                "blocker",
                "tool",
                "app max",
                "app p99",
                "app queries",
                "migration total",
                "done after blocker ended",
                "exit",
                "attempts",
            ],
            rows,
        )
    )
    new = [cells[("runner", b)] for b in blockers]
    worst = max(c["app_max_s"] for c in new)
    section.target(
        f"app max <= {ms(APP_MAX_TARGET_S)} with the default, every blocker",
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
    if 60.0 not in blockers and max(blockers) > 1:
        section.notes.append(f"quick run: the 60 s blocker was shortened to {max(blockers):g} s")
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", SIZES, run))
