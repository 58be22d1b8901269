"""Scenario 6, start-up cost: what the runner's no-op process imports (``python -X
importtime``, top 10 by cumulative time) and the peak RSS of a no-op and of a full upgrade,
beside plain Alembic and the peers.

    uv run --group bench python bench/startup.py [--smoke]
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

from _bench import Bench, Failed, Section, Table, alternate, median, standalone
from history import IMPORT_LINE

SIZES = {"smoke": {"revisions": 3, "rounds": 1}, "full": {"revisions": 500, "rounds": 5}}
SIZES["quick"] = dict(SIZES["full"], rounds=2)
NOOP_TOOLS = ("runner", "alembic", "dbmate", "node-pg-migrate")
FULL_TOOLS = ("runner", "alembic-per-rev")


def run(bench: Bench, out: Path, revisions: int, rounds: int) -> Section:
    section = Section("6. Start-up cost: imports and peak memory")
    project = bench.project(revisions)
    dbs = {"runner": bench.database_at("runner", project, "start_runner", revisions)}
    dbs["alembic"] = bench.create_db("start_alembic", template=dbs["runner"])
    dbs["dbmate"] = bench.database_at("dbmate", project, "start_dbmate", revisions)
    dbs["node-pg-migrate"] = bench.database_at("node-pg-migrate", project, "start_npm", revisions)

    # --- imports of the runner's no-op ---
    cmd = bench.command("runner", project, dbs["runner"])
    cmd.argv[1:1] = ["-X", "importtime"]
    bench.expect_noop(bench.run(cmd))  # warm-up: bytecode
    cumulative: dict[str, list[int]] = collections.defaultdict(list)
    own: dict[str, list[int]] = collections.defaultdict(list)
    families: dict[str, list[int]] = {"alembic": [], "sqlalchemy": [], "psycopg": []}
    for _ in range(rounds):
        done = bench.run(cmd)
        bench.expect_noop(done)
        modules = []
        for line in done.stderr.splitlines():
            match = IMPORT_LINE.match(line)
            if match:
                name = match.group(4)
                modules.append(name)
                own[name].append(int(match.group(1)))
                cumulative[name].append(int(match.group(2)))
        for family, counts in families.items():
            counts.append(sum(1 for m in modules if m.split(".")[0] == family))
    top = sorted(cumulative, key=lambda m: -median(cumulative[m]))[:10]
    section.tables.append(
        Table(
            ["module (runner no-op, `-X importtime`)", "cumulative", "self"],
            [
                [
                    f"`{m}`",
                    f"{median(cumulative[m]) / 1000:.1f} ms",
                    f"{median(own[m]) / 1000:.1f} ms",
                ]
                for m in top
            ],
        )
    )
    section.notes.append(
        "modules imported by the no-op, per family (median): "
        + ", ".join(f"{family} {median(counts):.0f}" for family, counts in families.items())
        + " (Alembic and SQLAlchemy should be 0: the manifest answers without them)"
    )

    # --- peak RSS ---
    rss: dict[str, list[float]] = collections.defaultdict(list)
    for _r, tool in alternate(NOOP_TOOLS, rounds):
        done, peak = bench.peak_rss(bench.command(tool, project, dbs[tool]))
        bench.expect_noop(done)
        rss[f"{tool} no-op"].append(peak)
    for r, tool in alternate(FULL_TOOLS, rounds):
        db = bench.create_db(f"start_full_{r}")
        try:
            done, peak = bench.peak_rss(bench.command(tool, project, db))
            if done.returncode != 0 or bench.applied(tool, db) != revisions:
                raise Failed(f"{tool} did not apply {revisions} steps:\n" + done.tail())
            rss[f"{tool} full upgrade ({revisions})"].append(peak)
        finally:
            bench.drop_db(db)
    section.tables.append(
        Table(
            ["process", "peak RSS (median)", "runs"],
            [[k, f"{median(v):.0f} MB", str(len(v))] for k, v in rss.items()],
        )
    )
    section.intro = [
        f"Imports: {rounds} run(s) of `python -X importtime -m runner upgrade` on a database at "
        f"head with {revisions} revisions (bytecode compiled; medians per module; importtime "
        "itself adds overhead). Peak RSS: `ru_maxrss` of each process, medians of "
        f"{rounds} run(s) each, alternating; each started by a small shim (`python -S`) so "
        f"that it does not inherit the bench's resident set (the shim's floor: "
        f"{bench.rss_floor():.0f} MB)."
    ]
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
