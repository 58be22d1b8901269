"""Scenario 3, the herd: N processes started at once on a database behind by a few
revisions, as N tasks of one deploy starting together. For the runner, the overhead ratio

    wall(N racing on a database behind) / (wall(1 runner migrating alone) + wall(N at head))

measured in one run, the three alternating; peak connections (``pg_stat_activity``, sampled)
and failures. The same herd of plain Alembic, dbmate and node-pg-migrate (whose default
lock fails its followers; also its ``--advisory-lock-mode wait``), and what each leaves.

    uv run --group bench python bench/herd.py [--smoke]
"""

from __future__ import annotations

import collections
import dataclasses
import re
import sys
import threading
import time
from pathlib import Path

from _bench import (
    Bench,
    Done,
    Failed,
    Project,
    Section,
    Table,
    connect,
    median,
    plot,
    rotated,
    standalone,
)

# compare: a directory holding another ``runner`` package (e.g. a prototype's checkout), run
# as `runner-b` alternately with this checkout's runner
SIZES = {
    "smoke": {
        "ns": (2,),
        "total": 6,
        "behind": 2,
        "rounds": 1,
        "peers": True,
        "peer_rounds": 1,
        "warmup": False,
        "compare": "",
    },
    "full": {
        "ns": (1, 10, 50, 100),
        "total": 500,
        "behind": 20,
        "rounds": 3,
        "peers": True,
        "peer_rounds": 2,
        "warmup": True,
        "compare": "",
    },
}
SIZES["quick"] = dict(SIZES["full"], rounds=1, peer_rounds=1)
OVERHEAD = 1.2
PEER_TOOLS = ("alembic", "dbmate", "node-pg-migrate", "node-pg-migrate-wait")


@dataclasses.dataclass
class Herd:
    tool: str
    n: int
    wall: float
    peak: int
    runs: list[Done]
    applied: int  # the tool's bookkeeping afterwards (negative: that many alembic_version rows)

    @property
    def failures(self) -> list[Done]:
        return [d for d in self.runs if d.returncode != 0]

    def how(self) -> str:
        """The failures, grouped by their message (numbers and identifiers blanked)."""
        reasons = collections.Counter(
            re.sub(r"'[^']*'|\"[^\"]*\"|\b[0-9a-f]{6,}\b|\d+", "…", d.last_error_line())
            for d in self.failures
        )
        return "; ".join(f"{count}× {why}" for why, count in reasons.most_common(2)) or "-"

    def outcomes(self) -> str:
        found = collections.Counter(
            d.event("summary").get("outcome") or f"exit {d.returncode}" for d in self.runs
        )
        return ", ".join(f"{k} {v}" for k, v in sorted(found.items()))


class PeakConnections:
    """Samples how many backends are connected to ``db`` until stopped."""

    def __init__(self, bench: Bench, db: str) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._conn = connect(bench.cluster, bench.password)
        self._db = db
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            row = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self._db,)
            ).fetchone()
            self.peak = max(self.peak, int(row[0]) if row else 0)
            self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.peak


def herd(bench: Bench, tool: str, project: Project, template: str, n: int, tag: str) -> Herd:
    """Start ``n`` ``tool`` processes at once on a copy of ``template``; wait for all."""
    db = bench.create_db(f"herd_{tag}", template=template)
    try:
        commands = [bench.command(tool, project, db) for _ in range(n)]
        sampler = PeakConnections(bench, db)
        try:
            started = time.perf_counter()
            procs = [bench.start(c) for c in commands]
            runs = [p.reap(bench.timeout) for p in procs]
            wall = time.perf_counter() - started
        finally:
            peak = sampler.stop()
        return Herd(tool, n, wall, peak, runs, bench.applied(tool, db))
    finally:
        bench.drop_db(db)


def state(result: Herd, total: int) -> str:
    if result.applied == total:
        return "at head"
    if result.applied < 0:
        return f"**{-result.applied} rows in alembic_version**"
    return f"**{result.applied} of {total} applied**"


def run(
    bench: Bench,
    out: Path,
    ns: tuple[int, ...],
    total: int,
    behind: int,
    rounds: int,
    peers: bool,
    warmup: bool,
    peer_rounds: int = 1,
    compare: str = "",
) -> Section:
    section = Section(f"3. Herd: N processes at once, {behind} revisions behind ({total} in all)")
    project = bench.project(total)
    start_at = total - behind
    behind_db = bench.database_at("runner", project, "herd_tpl_behind", start_at)
    head_db = bench.database_at("runner", project, "herd_tpl_head", total)
    templates = {
        "runner": behind_db,
        "alembic": behind_db,
        "dbmate": bench.database_at("dbmate", project, "herd_tpl_dbmate", start_at),
        "node-pg-migrate": bench.database_at("node-pg-migrate", project, "herd_tpl_npm", start_at),
    }
    templates["node-pg-migrate-wait"] = templates["node-pg-migrate"]
    variants = ["runner"]
    if compare:
        bench.runner_b = Path(compare).resolve()
        if not (bench.runner_b / "runner" / "__main__.py").is_file():
            raise Failed(f"compare={compare}: no runner package there")
        variants.append("runner-b")
    if warmup:
        for template in (behind_db, head_db):
            for variant in variants:
                herd(bench, variant, project, template, 1, "warm")
        for tool in PEER_TOOLS if peers else ():
            herd(bench, tool, project, templates[tool], 1, "warm")

    # --- the runner: racing vs (alone + at head), alternating (and with runner-b) ---
    kinds = [(v, k) for k in ("racing", "alone", "at head") for v in variants]
    results: dict[tuple[int, str, str], list[Herd]] = collections.defaultdict(list)
    for r in range(rounds):
        for n in rotated(ns, r):
            for variant, kind in rotated(kinds, r + n):
                template = head_db if kind == "at head" else behind_db
                got = herd(
                    bench,
                    variant,
                    project,
                    template,
                    1 if kind == "alone" else n,
                    f"{kind.replace(' ', '_')}_{n}_{r}",
                )
                results[n, variant, kind].append(got)
    rows = []
    ratio_at: dict[tuple[int, str], float] = {}
    conns: list[str] = []
    conns_ok = failures_ok = True
    for variant in variants:
        first = median([h.wall for h in results[ns[0], variant, "racing"]])
        for n in ns:
            walls = {
                k: median([h.wall for h in results[n, variant, k]])
                for k in ("racing", "alone", "at head")
            }
            racing = results[n, variant, "racing"]
            ratio_at[n, variant] = walls["racing"] / (walls["alone"] + walls["at head"])
            peak = max(h.peak for h in racing)
            failed = sum(len(h.failures) for h in racing)
            migrated = [
                sum(1 for d in h.runs if d.event("summary").get("outcome") == "migrated")
                for h in racing
            ]
            if variant == "runner":
                conns.append(f"{peak} at N={n}")
                conns_ok &= peak <= n + 2
                failures_ok &= (
                    failed == 0
                    and all(m == 1 for m in migrated)
                    and all(state(h, total) == "at head" for h in racing)
                )
            rows.append(
                ([variant] if compare else [])
                + [
                    str(n),
                    f"{walls['racing']:.2f} s",
                    f"{walls['alone']:.2f} s",
                    f"{walls['at head']:.2f} s",
                    f"{ratio_at[n, variant]:.2f}",
                    f"{walls['racing'] / first:.1f}×",
                    f"{peak}",
                    f"{failed}",
                    racing[-1].outcomes(),
                ]
            )
    section.tables.append(
        Table(
            (["runner"] if compare else [])
            + [
                "N",
                "racing (behind)",
                "1 alone (behind)",
                "N at head",
                "overhead ratio",
                f"racing / N={ns[0]}",
                "peak connections",
                "failures",
                "outcomes (last round)",
            ],
            rows,
        )
    )
    if compare:
        section.notes.append(
            f"`runner-b` is the runner package in `{bench.runner_b}`, measured "
            "alternately with this checkout's; the targets judge this checkout's"
        )
    big = [n for n in ns if n >= 50] or [max(ns)]
    worst = max(ratio_at[n, "runner"] for n in big)
    section.target(
        f"overhead ratio ≤ {OVERHEAD:g} at N = {', '.join(map(str, big))}",
        ", ".join(f"{ratio_at[n, 'runner']:.2f}" for n in big),
        worst <= OVERHEAD,
    )
    section.target("peak connections ≤ N + 2", ", ".join(conns), conns_ok)
    section.target(
        "zero failures, one runner migrates, the database ends at head",
        "see the table",
        failures_ok,
    )
    if worst > OVERHEAD:
        section.notes.append(
            "why the overhead ratio is above 1: a runner whose database is behind loads "
            "Alembic, SQLAlchemy and every revision file before it asks for the lock, then, "
            "once it gets it, finds nothing left to do; the waiters' loading competes for the "
            "cores with the one runner migrating. The hint in issue 16 (with a current "
            "manifest, take the lock first and load Alembic only if work is left) takes that "
            'work away from every waiter (see bench/README.md, "Prototype").'
        )
    if not conns_ok:
        section.notes.append(
            "why connections exceed N + 2: the pooler check opens no second session (one "
            "query on the runner's own), so each waiter holds one; beyond them the migrating "
            "runner opens its blocker watcher, and env.py may open its own connection."
        )

    # --- everyone: the peers' herds, alternating, beside the runner's racing herds ---
    everyone: dict[tuple[str, int], list[Herd]] = {
        ("runner", n): results[n, "runner", "racing"] for n in ns
    }
    for r in range(peer_rounds if peers else 0):
        for n in rotated(ns, r):
            for tool in rotated(PEER_TOOLS, r + n):
                got = herd(bench, tool, project, templates[tool], n, f"peer_{n}_{r}")
                everyone.setdefault((tool, n), []).append(got)
    rows = []
    wall = {key: median([h.wall for h in herds]) for key, herds in everyone.items()}
    order = [(t, n) for t in ("runner", *PEER_TOOLS) for n in ns if (t, n) in everyone]
    for tool, n in order:
        herds = everyone[tool, n]
        rows.append(
            [
                tool,
                str(n),
                f"{wall[tool, n]:.2f} s",
                f"{wall[tool, n] / wall[tool, ns[0]]:.1f}×",
                str(max(h.peak for h in herds)),
                " / ".join(str(len(h.failures)) for h in herds),
                herds[-1].how(),
                ", ".join(dict.fromkeys(state(h, total) for h in herds)),
            ]
        )
    section.tables.append(
        Table(
            [
                "tool",
                "N",
                "wall until all exited (median)",
                f"ratio to N={ns[0]}",
                "peak connections",
                "failures (each run)",
                "how they failed (last run)",
                "state afterwards",
            ],
            rows,
        )
    )
    section.intro = [
        f"N processes started together (one `Popen` after the other, as fast as the bench can) "
        f"on a copy of a database {behind} steps behind; wall time from the first start to the "
        "last exit. The overhead ratio divides the racing herd's wall time by the sum of one "
        "runner migrating alone and N runners started together at head: on a machine whose "
        "cores are the bottleneck, N processes cost their CPU whatever they do, so 1.0 means "
        "the race itself costs nothing. The runner's three measurements alternate in one run "
        f"(medians of {rounds}); the peers' herds alternate with each other (medians of "
        f"{peer_rounds}). Connections are sampled every 5 ms from "
        "`pg_stat_activity`, so a peak shorter than that can be missed."
    ]
    picture = plot(
        out / "herd.png",
        "Herd on a database behind",
        "N processes started at once",
        "wall until all exited (s)",
        {
            tool: (list(ns), [wall[tool, n] for n in ns])
            for tool in dict.fromkeys(t for t, _ in order)
        },
    )
    if picture:
        section.plots.append(picture)
    section.notes.append(
        "plain Alembic has no lock: nothing stops several processes from running the same "
        "pending steps (harmless for `SELECT 1`, not for real DDL); see the table for how "
        "the losers failed (typically Alembic's check on the version row's UPDATE)."
    )
    section.notes.append(
        "dbmate has no lock either (amacneil/dbmate#101): racing processes apply the same "
        "file and collide on `schema_migrations`' primary key. node-pg-migrate's default lock "
        "fails every process that finds it taken (a deploy of N tasks that overlap reports up "
        "to N-1 failures); `--advisory-lock-mode wait` blocks in `pg_advisory_lock` instead "
        "(no failures, but a blocked `pg_advisory_lock` waiter deadlocks with the holder's "
        "`CREATE INDEX CONCURRENTLY`: see ../shared/research/ANCHORS.md)."
    )
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
