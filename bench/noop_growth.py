"""Scenario 1, no-op and its growth: a whole process on a database already at head with 1 to
2,000 revisions; the runner (with its manifest) against plain Alembic, dbmate and
node-pg-migrate, each on its own database, and the floor (interpreter + ``import psycopg`` +
connect + ``SELECT 1``), all interleaved (the tools' order rotating within a round, the
sizes' order rotating across rounds). The runner, plain Alembic and the floor run with the
runtime virtualenv's python (made as the image makes it); the runner in the development
environment is one reference row.

    uv run --group bench python bench/noop_growth.py [--smoke|--quick]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from _bench import (
    Bench,
    Command,
    Done,
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

TOOLS = ("runner", "alembic", "dbmate", "node-pg-migrate", "floor")
# at the reference size only: the runner in the development environment, and what the
# runner's no-op stands on (the interpreter's start-up; the runner's imports doing nothing)
REFERENCE = ("runner-dev", "interpreter", "imports")
SIZES = {
    "smoke": {"revisions": (3,), "rounds": 1, "warmup": True},  # warm-up: the full path
    "full": {"revisions": (1, 10, 100, 500, 2000), "rounds": 15, "warmup": True},
}
SIZES["quick"] = dict(SIZES["full"], rounds=5)
SPEEDUP_VS_ALEMBIC = 3.0  # alembic / runner at 500 revisions, at least
WITHIN_DBMATE = 1.5  # runner / dbmate at 500 revisions, at most
WITHIN_FLOOR = 1.5  # runner / the floor at 500 revisions, at most
FLAT = 1.2  # max / min of the runner's medians over the sizes, at most
#: the least any Python tool that checks a database's version must do: start the interpreter,
#: import the driver, connect, one query (the URL from the environment: not in argv)
FLOOR_CODE = (
    "import os, psycopg\n"
    "with psycopg.connect(os.environ['BENCH_FLOOR_URL']) as conn:\n"
    "    conn.execute('SELECT 1').fetchone()\n"
)
LABELS = {
    "runner": "runner",
    "runner-dev": "runner (dev env)",
    "alembic": "plain Alembic",
    "dbmate": "dbmate",
    "node-pg-migrate": "node-pg-migrate",
    "floor": "the floor: interpreter + `import psycopg` + connect + `SELECT 1`",
    "interpreter": "`python -c pass`: the interpreter's start-up",
    "imports": "`python -m runner --version`: the runner's start-up doing nothing",
}


def commands(bench: Bench, revisions: tuple[int, ...]) -> dict[tuple[int, str], Command]:
    """Every (size, tool) command, each on a database of its own at head."""
    ref = reference(revisions)
    found: dict[tuple[int, str], Command] = {}
    for n in revisions:
        project = bench.project(n)
        for tool in TOOLS + (REFERENCE if n == ref else ()):
            name = f"noop_{n}_{tool.replace('-', '_')}"
            if tool in ("runner", "dbmate", "node-pg-migrate"):
                db = bench.database_at(tool, project, name, n)
            else:  # the same state as the runner's: a copy of it
                db = bench.create_db(name, template=f"noop_{n}_runner")
            if tool in ("floor", "interpreter", "imports"):
                env = dict(bench.command("runner", project, db).env)
                env["BENCH_FLOOR_URL"] = bench.url(db, "postgresql")
                args = {
                    "floor": ["-c", FLOOR_CODE],
                    "interpreter": ["-c", "pass"],
                    "imports": ["-m", "runner", "--version"],
                }[tool]
                found[n, tool] = Command(tool, [bench.python, *args], env, bench.tmp)
            else:
                found[n, tool] = bench.command(tool, project, db)
    return found


def reference(revisions: tuple[int, ...]) -> int:
    return 500 if 500 in revisions else max(revisions)


def check(bench: Bench, done: Done) -> None:
    tool = done.command.tool
    if tool in ("floor", "interpreter", "imports"):
        if done.returncode != 0:
            raise Failed(f"{tool} failed:\n" + done.tail())
    else:
        bench.expect_noop(done)


def run(bench: Bench, out: Path, revisions: tuple[int, ...], rounds: int, warmup: bool) -> Section:
    section = Section("1. No-op and its growth")
    ref = reference(revisions)
    cmds = commands(bench, revisions)
    for command in cmds.values() if warmup else ():  # fills the bytecode cache
        check(bench, bench.run(command))
    times: dict[tuple[int, str], list[float]] = {key: [] for key in cmds}
    cpu: dict[tuple[int, str], list[float]] = {key: [] for key in cmds}
    inside: dict[int, list[float]] = {n: [] for n in revisions}
    for r, n in alternate(revisions, rounds):
        tools = TOOLS + (REFERENCE if n == ref else ())
        for tool in rotated(tools, r + revisions.index(n)):
            done = bench.run(cmds[n, tool])
            check(bench, done)
            times[n, tool].append(done.seconds)
            cpu[n, tool].append(done.cpu_s)
            if tool == "runner":
                inside[n].append(float(done.event("summary").get("total_ms", "nan")))
    med = {key: median(values) for key, values in times.items()}
    section.intro = [
        f"Whole processes on a database at head; medians of {rounds} runs each"
        f"{', after one warm-up each (not counted)' if warmup else ''}; every round runs every "
        "tool at every size, the tools' order rotating (A B C D, B C D A, ...). Every runner "
        "run is checked to report `up_to_date` from its manifest with 0 files hashed; every "
        "peer run to apply nothing. The runner, plain Alembic and the floor run with the "
        "runtime virtualenv's python (see the header); `runner (dev env)` is the same runner "
        "in the development environment, for reference. CPU is the process's own user+sys "
        "time (`wait4`; the server's share not included): on a shared machine it moves much "
        "less than wall time."
    ]
    section.tables.append(growth_table(revisions, med, inside))
    section.tables.append(reference_table(ref, times, cpu, inside))
    targets(section, revisions, med, cpu)
    picture = plot(
        out / "noop_growth.png",
        "No-op on a database at head",
        "revisions (log)",
        "median wall time per process (ms)",
        {
            LABELS[tool].split(":")[0]: (list(revisions), [med[n, tool] * 1000 for n in revisions])
            for tool in TOOLS
        },
        logx=True,
    )
    if picture:
        section.plots.append(picture)
    notes(section, revisions, med, times)
    return section


def growth_table(
    revisions: tuple[int, ...], med: dict[tuple[int, str], float], inside: dict[int, list[float]]
) -> Table:
    rows = []
    for n in revisions:
        r, a, d, p, f = (med[n, t] for t in TOOLS)
        rows.append(
            [
                str(n),
                ms(r),
                ms(f),
                ms(a),
                ms(d),
                ms(p),
                f"{r / f:.2f}×",
                f"{a / r:.2f}×",
                f"{r / d:.2f}×",
                f"{p / r:.2f}×",
                f"{median(inside[n]):.0f} ms",
            ]
        )
    return Table(
        [
            "revisions",
            "runner",
            "the floor",
            "plain Alembic",
            "dbmate",
            "node-pg-migrate",
            "runner / floor",
            "Alembic / runner",
            "runner / dbmate",
            "node-pg-migrate / runner",
            "runner in-process (summary `total_ms`)",
        ],
        rows,
    )


def reference_table(
    ref: int,
    times: dict[tuple[int, str], list[float]],
    cpu: dict[tuple[int, str], list[float]],
    inside: dict[int, list[float]],
) -> Table:
    """The no-op at the reference size, wall and CPU, with the floors under it."""
    order = ("runner", "floor", "runner-dev", "alembic", "dbmate", "node-pg-migrate")
    order += ("interpreter", "imports")
    rows = [
        [LABELS[tool], ms(median(times[ref, tool])), ms(median(cpu[ref, tool]))] for tool in order
    ]
    rows.append(
        [
            "the runner's in-process work (summary `total_ms`: manifest, files' sizes and "
            "mtimes, connect, version, ledger)",
            f"{median(inside[ref]):.0f} ms",
            "",
        ]
    )
    return Table([f"no-op at {ref} revisions (same rounds, medians)", "wall", "CPU"], rows)


def targets(
    section: Section,
    revisions: tuple[int, ...],
    med: dict[tuple[int, str], float],
    cpu: dict[tuple[int, str], list[float]],
) -> None:
    ref = reference(revisions)
    speedup = med[ref, "alembic"] / med[ref, "runner"]
    vs_dbmate = med[ref, "runner"] / med[ref, "dbmate"]
    vs_floor = med[ref, "runner"] / med[ref, "floor"]
    cpu_vs_floor = median(cpu[ref, "runner"]) / median(cpu[ref, "floor"])
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
        f"no-op at {ref} revisions ≤ {WITHIN_FLOOR:g}× the floor (interpreter + "
        "`import psycopg` + connect + `SELECT 1`, same venv)",
        f"{vs_floor:.2f}× (CPU {cpu_vs_floor:.2f}×)",
        vs_floor <= WITHIN_FLOOR,
    )
    section.target(
        f"runner flat over {revisions[0]}..{revisions[-1]} revisions (max/min ≤ {FLAT:g})",
        f"{spread:.2f}",
        spread <= FLAT,
    )


def notes(
    section: Section,
    revisions: tuple[int, ...],
    med: dict[tuple[int, str], float],
    times: dict[tuple[int, str], list[float]],
) -> None:
    ref = reference(revisions)
    spreads = {
        tool: max(med[n, tool] for n in revisions) / min(med[n, tool] for n in revisions)
        for tool in TOOLS
    }
    section.notes.append(
        "growth from the smallest to the largest history (max/min of the "
        "medians): " + ", ".join(f"{t} {s:.2f}" for t, s in spreads.items())
    )
    dev = med[ref, "runner-dev"] - med[ref, "runner"]
    section.notes.append(
        f"the development environment costs the same runner {ms(dev)} more per no-op "
        f"(runner (dev env) {ms(med[ref, 'runner-dev'])}): an editable install and dev tools "
        "(structlog finds and imports `rich`) that no deployment has"
    )
    vs_dbmate = med[ref, "runner"] / med[ref, "dbmate"]
    if vs_dbmate > WITHIN_DBMATE:
        section.notes.append(
            f"why the runner is {vs_dbmate:.1f}× dbmate: the floor alone (an interpreter, "
            f"psycopg, one query) takes {ms(med[ref, 'floor'])}, "
            f"{med[ref, 'floor'] / med[ref, 'dbmate']:.1f}× dbmate's whole run; the runner's "
            "imports are listed module by module in scenario 6 (`-X importtime`)."
        )
    section.notes.append(
        "per-size spread of the runner's runs (stdev/median): "
        + ", ".join(
            f"{n}: {statistics.pstdev(times[n, 'runner']) / med[n, 'runner'] * 100:.0f} %"
            for n in revisions
        )
    )


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
