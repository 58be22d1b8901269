"""Scenario 1, no-op and its growth: a whole process on a database already at head with 1 to
2,000 revisions; the runner (with its manifest) against plain Alembic, dbmate and
node-pg-migrate, each on its own database, all interleaved (the tools' order rotating within
a round, the sizes' order rotating across rounds).

    uv run --group bench python bench/noop_growth.py [--smoke]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from _bench import (
    PY,
    Bench,
    Command,
    Failed,
    Section,
    Table,
    alternate,
    median,
    ms,
    plot,
    rotated,
    standalone,
)
from _common import ROOT

TOOLS = ("runner", "alembic", "dbmate", "node-pg-migrate")
SIZES = {
    "smoke": {"revisions": (3,), "rounds": 1, "warmup": False},
    "full": {"revisions": (1, 10, 100, 500, 2000), "rounds": 15, "warmup": True},
}
SIZES["quick"] = dict(SIZES["full"], rounds=5)
SPEEDUP_VS_ALEMBIC = 3.0  # alembic / runner at 500 revisions, at least
WITHIN_DBMATE = 1.5  # runner / dbmate at 500 revisions, at most
FLAT = 1.2  # max / min of the runner's medians over the sizes, at most
# the floors under the runner's no-op: the interpreter's start-up, and the runner's start-up
# (its imports and argument parsing) doing nothing: `python -m runner --version`
FLOORS = {"interpreter": ["-c", "pass"], "imports": ["-m", "runner", "--version"]}


def run(bench: Bench, out: Path, revisions: tuple[int, ...], rounds: int, warmup: bool) -> Section:
    section = Section("1. No-op and its growth")
    dbs: dict[tuple[int, str], str] = {}
    for n in revisions:
        project = bench.project(n)
        for tool in TOOLS:
            name = f"noop_{n}_{tool.replace('-', '_')}"
            if tool == "alembic":  # the same state as the runner's: copy it
                dbs[n, tool] = bench.create_db(name, template=dbs[n, "runner"])
            else:
                dbs[n, tool] = bench.database_at(tool, project, name, n)
    commands = {
        (n, tool): bench.command(tool, bench.project(n), dbs[n, tool])
        for n in revisions
        for tool in TOOLS
    }
    for command in commands.values() if warmup else ():  # fills the bytecode cache
        bench.expect_noop(bench.run(command))
    # the floors under the runner's no-op, in the same rounds: interpreter start-up, and the
    # interpreter with the runner's own imports (what a no-op costs before it does anything)
    env = commands[revisions[0], "runner"].env
    floors = {title: Command(title, [PY, *args], env, ROOT) for title, args in FLOORS.items()}
    for command in floors.values() if warmup else ():
        bench.run(command)
    times: dict[tuple[int, str], list[float]] = {key: [] for key in commands}
    floor_times: dict[str, list[float]] = {title: [] for title in floors}
    inside: dict[int, list[float]] = {n: [] for n in revisions}
    for r, n in alternate(revisions, rounds):
        for tool in rotated(TOOLS, r + revisions.index(n)):
            done = bench.run(commands[n, tool])
            bench.expect_noop(done)
            times[n, tool].append(done.seconds)
            if tool == "runner":
                inside[n].append(float(done.event("summary").get("total_ms", "nan")))
        if n == revisions[-1]:  # once per round
            for title, command in floors.items():
                done = bench.run(command)
                if done.returncode != 0:
                    raise Failed(f"{title} failed:\n" + done.tail())
                floor_times[title].append(done.seconds)
    med = {key: median(values) for key, values in times.items()}
    section.intro = [
        f"Whole processes on a database at head; medians of {rounds} runs each, after one "
        "warm-up each (not counted); every round runs every tool at every size, the tools' "
        "order rotating (A B C D, B C D A, ...). Every runner run is checked to report "
        "`up_to_date` from its manifest with 0 files hashed; every peer run to apply nothing."
    ]
    rows = []
    for n in revisions:
        r, a, d, p = (med[n, t] for t in TOOLS)
        rows.append(
            [
                str(n),
                ms(r),
                ms(a),
                ms(d),
                ms(p),
                f"{a / r:.2f}×",
                f"{r / d:.2f}×",
                f"{p / r:.2f}×",
                f"{median(inside[n]):.0f} ms",
            ]
        )
    section.tables.append(
        Table(
            [
                "revisions",
                "runner",
                "plain Alembic",
                "dbmate",
                "node-pg-migrate",
                "Alembic / runner",
                "runner / dbmate",
                "node-pg-migrate / runner",
                "runner in-process (summary `total_ms`)",
            ],
            rows,
        )
    )
    ref = 500 if 500 in revisions else max(revisions)
    speedup = med[ref, "alembic"] / med[ref, "runner"]
    vs_dbmate = med[ref, "runner"] / med[ref, "dbmate"]
    runner_meds = [med[n, "runner"] for n in revisions]
    spread = max(runner_meds) / min(runner_meds)
    section.target(
        f"no-op at {ref} revisions ≥ {SPEEDUP_VS_ALEMBIC:g}× faster than plain Alembic",
        f"{speedup:.2f}×",
        speedup >= SPEEDUP_VS_ALEMBIC,
    )
    section.target(
        f"no-op at {ref} revisions within {WITHIN_DBMATE:g}× of dbmate",
        f"{vs_dbmate:.2f}×",
        vs_dbmate <= WITHIN_DBMATE,
    )
    section.target(
        f"runner flat over {revisions[0]}..{revisions[-1]} revisions (max/min ≤ {FLAT:g})",
        f"{spread:.2f}",
        spread <= FLAT,
    )
    picture = plot(
        out / "noop_growth.png",
        "No-op on a database at head",
        "revisions (log)",
        "median wall time per process (ms)",
        {tool: (list(revisions), [med[n, tool] * 1000 for n in revisions]) for tool in TOOLS},
        logx=True,
    )
    if picture:
        section.plots.append(picture)
    spreads = {
        tool: max(med[n, tool] for n in revisions) / min(med[n, tool] for n in revisions)
        for tool in TOOLS
    }
    section.notes.append(
        "growth from the smallest to the largest history (max/min of the "
        "medians): " + ", ".join(f"{t} {s:.2f}" for t, s in spreads.items())
    )
    start = median(floor_times["interpreter"])
    imports = median(floor_times["imports"])
    section.tables.append(
        Table(
            ["where the runner's no-op goes (same rounds, medians)", "time"],
            [
                ["`python -c pass`: the interpreter's start-up", ms(start)],
                [
                    "`python -m runner --version` minus that: the runner's start-up doing nothing (its "
                    "imports: pydantic, psycopg, structlog; no Alembic, no SQLAlchemy)",
                    ms(imports - start),
                ],
                [
                    f"the runner's in-process work at {ref} revisions (summary `total_ms`: manifest, "
                    "files' sizes and mtimes, connect, version, ledger)",
                    f"{median(inside[ref]):.0f} ms",
                ],
                [f"the whole no-op at {ref} revisions", ms(med[ref, "runner"])],
                [
                    f"dbmate's whole no-op at {ref} revisions (one static Go binary)",
                    ms(med[ref, "dbmate"]),
                ],
            ],
        )
    )
    if vs_dbmate > WITHIN_DBMATE:
        section.notes.append(
            f"why the runner is {vs_dbmate:.1f}× dbmate: the interpreter's start-up and the "
            f"runner's imports alone (`--version`) take {ms(imports)}, "
            f"{imports / med[ref, 'dbmate']:.1f}× dbmate's whole run; the imports are listed "
            "module by module in scenario 6 (`-X importtime`)."
        )
    section.notes.append(
        "per-size spread of the runner's runs (stdev/median): "
        + ", ".join(
            f"{n}: {statistics.pstdev(times[n, 'runner']) / med[n, 'runner'] * 100:.0f} %"
            for n in revisions
        )
    )
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
