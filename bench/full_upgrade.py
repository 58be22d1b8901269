"""Scenario 2, full upgrade from empty: every tool applies the same N trivial steps
(``SELECT 1``) to a fresh database; the runner against plain Alembic on the same revision
files in both transaction styles, and the peers on equivalent SQL files. Then the way back:
the runner upgrades an empty database through M revisions and downgrades it to the first
(M - 1 revisions), alternately, on a fresh database each round.

    uv run --group bench python bench/full_upgrade.py [--smoke|--quick]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from _bench import Bench, Failed, Section, Table, alternate, head_of, median, ms, standalone

TOOLS = ("runner", "alembic-per-rev", "runner-1tx", "alembic", "dbmate", "node-pg-migrate")
LIKE_FOR_LIKE = {"runner": "alembic-per-rev", "runner-1tx": "alembic"}
SIZES = {
    "smoke": {"revisions": 3, "rounds": 1, "warmup": True, "down_revisions": 4, "down_rounds": 1},
    "full": {
        "revisions": 500,
        "rounds": 6,
        "warmup": True,
        "down_revisions": 2000,
        "down_rounds": 3,
    },
}
SIZES["quick"] = dict(SIZES["full"], rounds=2, down_rounds=1)
#: runner / plain Alembic doing the same work (a transaction per revision), at most (issue 25)
WITHIN = 1.10
#: the runner's downgrade of M - 1 revisions / its upgrade of M, at most (issue 25)
DOWN_WITHIN = 1.2

STYLE = {
    "runner": "a transaction per revision (the runner's default; env.py says nothing)",
    "alembic-per-rev": "a transaction per revision (env.py: `transaction_per_migration=True`)",
    "runner-1tx": "one transaction (env.py: `transaction_per_migration=False`)",
    "alembic": "one transaction (Alembic's template env.py)",
    "dbmate": "a transaction per file (dbmate's default)",
    "node-pg-migrate": "one transaction (`--single-transaction`, its default)",
}


def run(
    bench: Bench,
    out: Path,
    revisions: int,
    rounds: int,
    warmup: bool,
    down_revisions: int,
    down_rounds: int,
) -> Section:
    section = Section(f"2. Full upgrade from empty: {revisions} revisions; and back")
    project = bench.project(revisions)
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    cpu: dict[str, list[float]] = {t: [] for t in TOOLS}

    def once(tool: str, tag: str) -> None:
        db = bench.create_db(f"full_{tag}")
        try:
            done = bench.run(bench.command(tool, project, db))
            if done.returncode != 0 or bench.applied(tool, db) != revisions:
                raise Failed(f"{tool} did not apply all {revisions} steps:\n" + done.tail())
            reported = len(done.event("summary").get("applied") or [])
            if tool.startswith("runner") and reported != revisions:
                raise Failed(f"{tool} did not report {revisions} applied:\n" + done.tail())
            if not tag.startswith("warm"):
                times[tool].append(done.seconds)
                cpu[tool].append(done.cpu_s)
        finally:
            bench.drop_db(db)

    for tool in TOOLS if warmup else ():
        once(tool, f"warm_{tool.replace('-', '_')}")
    for r, tool in alternate(TOOLS, rounds):
        once(tool, f"{tool.replace('-', '_')}_{r}")
    section.intro = [
        f"A fresh database per run (created before and dropped after, not timed); medians of "
        f"{rounds} runs, the order rotating every round"
        f"{', after one warm-up each' if warmup else ''}. "
        "Every run is checked to leave the database at the last step. CPU is the process's "
        "own user+sys time (the server's share not included); peak memory is in scenario 6."
    ]
    rows = []
    for tool in TOOLS:
        t = median(times[tool])
        rows.append(
            [
                tool,
                STYLE[tool],
                ms(t),
                f"{t * 1000 / revisions:.2f} ms",
                f"{median(cpu[tool]) * 1000:.0f} ms",
            ]
        )
    section.tables.append(
        Table(["tool", "transactions", "wall (median)", "per revision", "CPU (median)"], rows)
    )
    ratio = median(times["runner"]) / median(times["alembic-per-rev"])
    cpu_ratio = median(cpu["runner"]) / median(cpu["alembic-per-rev"])
    section.target(
        f"full upgrade of {revisions}: runner ≤ {WITHIN:.2f}× `alembic-per-rev` (same files, "
        "a transaction per revision each)",
        f"{ratio:.3f} (CPU {cpu_ratio:.3f})",
        ratio <= WITHIN,
    )
    if ratio > WITHIN:
        section.notes.append(
            "missed: the CPU ratio beside the wall ratio says whether the runner's own work "
            "(its log lines, ledger rows, limits per statement) or waiting is the cause; "
            "`uv run python bench/history.py --profile` prints a cProfile of one full upgrade "
            "of each, side by side, with the runner's steps named."
        )
    one_tx = median(times["runner-1tx"]) / median(times["alembic"])
    section.notes.append(
        f"one transaction each (runner-1tx / alembic, not a target): {one_tx:.3f} "
        f"(CPU {median(cpu['runner-1tx']) / median(cpu['alembic']):.3f})"
    )
    section.notes.append(
        "runner / alembic (one transaction) compares two different jobs: a transaction per "
        "revision costs a BEGIN and a COMMIT more per revision and keeps what was applied "
        f"when a later revision fails: {median(times['runner']) / median(times['alembic']):.3f}"
    )
    section.notes.append(
        "the peers run SQL files, not Python: no interpreter, no Alembic; their figures are what "
        "the same steps cost a team that writes SQL migrations "
        f"(runner / dbmate {median(times['runner']) / median(times['dbmate']):.2f}, "
        "runner / node-pg-migrate "
        f"{median(times['runner']) / median(times['node-pg-migrate']):.2f})"
    )
    downgrade(bench, section, down_revisions, down_rounds)
    return section


def downgrade(bench: Bench, section: Section, revisions: int, rounds: int) -> None:
    """The runner's upgrade from empty through ``revisions`` and its downgrade back to the
    first (``revisions - 1`` revisions), alternately on a fresh database per round."""
    project = bench.project(revisions)
    up: list[float] = []
    down: list[float] = []
    up_cpu: list[float] = []
    down_cpu: list[float] = []
    for r in range(rounds):
        db = bench.create_db(f"down_{r}")
        try:
            upgrade = bench.command("runner", project, db)
            done = bench.run(upgrade)
            if done.returncode != 0 or bench.applied("runner", db) != revisions:
                raise Failed(f"the runner did not apply {revisions} steps:\n" + done.tail())
            up.append(done.seconds)
            up_cpu.append(done.cpu_s)
            argv = [upgrade.argv[0], "-m", "runner", "downgrade", head_of(1)]
            done = bench.run(dataclasses.replace(upgrade, argv=argv))
            outcome = done.event("summary").get("outcome")
            if done.returncode != 0 or outcome != "downgraded" or bench.applied("runner", db) != 1:
                raise Failed(f"the runner did not downgrade {db} to step 1:\n" + done.tail())
            down.append(done.seconds)
            down_cpu.append(done.cpu_s)
        finally:
            bench.drop_db(db)
    ratio = median(down) / median(up)
    section.tables.append(
        Table(
            ["runner, a transaction per revision", "revisions", "wall (median)", "CPU (median)"],
            [
                ["upgrade from empty", str(revisions), ms(median(up)), ms(median(up_cpu))],
                [
                    "downgrade to the first",
                    str(revisions - 1),
                    ms(median(down)),
                    ms(median(down_cpu)),
                ],
            ],
        )
    )
    section.target(
        f"downgrade of {revisions - 1:,} revisions ≤ {DOWN_WITHIN:g}× the upgrade of {revisions:,}",
        f"{ratio:.3f} (CPU {median(down_cpu) / median(up_cpu):.3f})",
        ratio <= DOWN_WITHIN,
    )
    section.notes.append(
        f"the way back: {rounds} round(s) of the runner upgrading a fresh database through "
        f"{revisions} revisions, then `downgrade {head_of(1)}` on it (each revision's "
        "`downgrade()` is empty: the figures are the runner's own cost per revision, both ways)"
    )


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
