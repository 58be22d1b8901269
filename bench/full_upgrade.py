"""Scenario 2, full upgrade from empty: every tool applies the same N trivial steps
(``SELECT 1``) to a fresh database; the runner against plain Alembic on the same revision
files in both transaction styles, and the peers on equivalent SQL files.

    uv run --group bench python bench/full_upgrade.py [--smoke]
"""

from __future__ import annotations

import sys
from pathlib import Path

from _bench import Bench, Failed, Section, Table, alternate, median, ms, standalone

TOOLS = ("runner", "alembic-per-rev", "runner-1tx", "alembic", "dbmate", "node-pg-migrate")
LIKE_FOR_LIKE = {"runner": "alembic-per-rev", "runner-1tx": "alembic"}
SIZES = {
    "smoke": {"revisions": 3, "rounds": 1, "warmup": False},
    "full": {"revisions": 500, "rounds": 6, "warmup": True},
}
SIZES["quick"] = dict(SIZES["full"], rounds=2)
WITHIN = 1.05  # runner / plain Alembic doing the same work, at most

STYLE = {
    "runner": "a transaction per revision (the runner's default; env.py says nothing)",
    "alembic-per-rev": "a transaction per revision (env.py: `transaction_per_migration=True`)",
    "runner-1tx": "one transaction (env.py: `transaction_per_migration=False`)",
    "alembic": "one transaction (Alembic's template env.py)",
    "dbmate": "a transaction per file (dbmate's default)",
    "node-pg-migrate": "one transaction (`--single-transaction`, its default)",
}


def run(bench: Bench, out: Path, revisions: int, rounds: int, warmup: bool) -> Section:
    section = Section(f"2. Full upgrade from empty: {revisions} revisions")
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
    missed = []
    for mine, theirs in LIKE_FOR_LIKE.items():
        ratio = median(times[mine]) / median(times[theirs])
        cpu_ratio = median(cpu[mine]) / median(cpu[theirs])
        section.target(
            f"{mine} within {round((WITHIN - 1) * 100)} % of {theirs} (same files, "
            "same transactions)",
            f"{ratio:.3f} (CPU {cpu_ratio:.3f})",
            ratio <= WITHIN,
        )
        if ratio > WITHIN:
            missed.append(mine)
    if missed:
        section.notes.append(
            f"missed for {', '.join(missed)}: the CPU ratio beside the wall ratio says whether "
            "the runner's own work (its log lines, ledger rows, limits per statement) or waiting "
            "is the cause; `uv run python bench/history.py --profile` prints a cProfile of one "
            "full upgrade of each, side by side, with the runner's steps named."
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
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
