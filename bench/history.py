"""Cost against the length of the history: whole ``upgrade`` processes on generated linear
histories of trivial revisions (each ``op.execute("SELECT 1")``), runner against plain Alembic.

    uv run python bench/history.py [--iterations 15] [--full-runs 8] [--revisions 500]
                                   [--bytecode cached|none] [--quick] [--profile|--no-profile]

1. no-op at ``--revisions`` (database at head): ``python -m runner upgrade`` with the
   manifest against ``python -m alembic -c <ini> upgrade head``, alternately.
   Target: runner at least 2.5x faster (median alembic / median runner >= 2.5).
2. no-op with the manifest at 10, 100 and ``--revisions`` revisions, interleaved.
   Target: flat (max median / min median <= 1.20).
3. full upgrade from an empty database to ``--revisions``: runner against plain Alembic, a
   fresh database per run, in rotating order, on the same revision files: each with env.py
   committing every revision (the runner's default; the service's alembic/env.py) and with
   one transaction for everything. Target: runner within 10 % of plain Alembic doing the
   same work (median ratio <= 1.10); the other pairs are reported.
   When missed (or with ``--profile``) one run of each is profiled with cProfile.
4. the imports of the no-op process (``-X importtime``): no alembic, no sqlalchemy, and the
   ten most expensive modules (cumulative).

Prints numbers and whether each target was met; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pstats
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench import (
    ROOT,
    connect,
    create_database,
    describe,
    machine,
    runner_env,
    runtime_venv,
    temp_dir,
    throwaway_cluster,
    with_bytecode,
    write_project,
)
from noop import Failed, check_alembic, check_runner, line, timed

from devtools.projects import age_files  # importable once _bench put the repository on sys.path

NOOP_TARGET = 2.5  # alembic / runner, at least
FLAT_TARGET = 1.20  # max / min of the three medians, at most
FULL_TARGET = 1.10  # runner / alembic, at most
SMALL_SIZES = (10, 100)


def head_of(revisions: int) -> str:
    return f"b{revisions:011x}"  # write_project's naming


def version(cluster: Any, password: str, dbname: str) -> list[str]:
    with connect(cluster, password, dbname) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            return []
        return sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))


def db_counters(cluster: Any, password: str, dbname: str) -> dict[str, int]:
    """Transactions and row changes in ``dbname`` as the statistics system saw them (the
    backends that did the work have exited, which flushes their counters)."""
    with connect(cluster, password, dbname) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated "
            "FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    if row is None:
        raise Failed(f"no pg_stat_database row for {dbname}")
    return dict(
        zip(("commits", "rollbacks", "inserted", "updated"), (int(v) for v in row), strict=True)
    )


def drop_database(cluster: Any, password: str, name: str) -> None:
    with connect(cluster, password) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scripts_loaded(output: str) -> list[dict[str, Any]]:
    """Every ``scripts.loaded`` event (source manifest / files) in a runner's log."""
    found = []
    for text in output.splitlines():
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "scripts.loaded":
            found.append(event)
    return found


class Project:
    """A generated project with its manifest, and a database migrated to its head."""

    def __init__(
        self,
        cluster: Any,
        password: str,
        root: Path,
        revisions: int,
        cache: Path | None,
        timeout: float,
        python: str,
    ) -> None:
        self.revisions = revisions
        self.python = python
        self.db = f"hist_{revisions}"
        self.ini = write_project(root, revisions)
        # the same revision files under env.py files that say how to use transactions
        self.per_revision_ini = write_project(
            root.with_name(root.name + "-per-revision"), revisions, True, versions_of=self.ini
        )
        self.one_transaction_ini = write_project(
            root.with_name(root.name + "-one-transaction"), revisions, False, versions_of=self.ini
        )
        self.env = with_bytecode(runner_env(cluster.url(self.db), self.ini), cache)
        self.runner_cmd = [python, "-m", "runner", "upgrade"]
        self.alembic_cmd = [python, "-m", "alembic", "-c", str(self.ini), "upgrade", "head"]
        create_database(cluster, password, self.db)
        # as checked out before an image build: files written moments before the manifest
        # are hashed on every run, which a generated project's would otherwise always be
        age_files(self.ini.parent / "migrations" / "versions", 3600)
        manifest_s, proc = timed([python, "-m", "runner", "manifest"], self.env, timeout)
        if proc.returncode != 0 or not (root / "migration-manifest.json").is_file():
            raise Failed(
                f"`runner manifest` exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        migrate_s, proc = timed(self.runner_cmd, self.env, timeout)
        summary = check_runner(proc, "migrated")
        if len(summary.get("applied") or []) != revisions:
            raise Failed(f"the runner applied {len(summary.get('applied') or [])} of {revisions}")
        if version(cluster, password, self.db) != [head_of(revisions)]:
            raise Failed(f"{self.db} is not at {head_of(revisions)} after migrating")
        print(
            f"  {revisions:>4} revisions: manifest written in {manifest_s * 1000:.0f} ms, "
            f"database {self.db} migrated to head in {migrate_s * 1000:.0f} ms"
        )

    def noop(self, timeout: float) -> tuple[float, dict[str, Any]]:
        elapsed, proc = timed(self.runner_cmd, self.env, timeout)
        summary = check_runner(proc, "up_to_date")
        loaded = scripts_loaded(proc.stdout)
        if [(e.get("source"), e.get("files_hashed")) for e in loaded] != [("manifest", 0)]:
            raise Failed(
                f"the no-op run at {self.revisions} revisions did not use the manifest "
                f"without hashing files:\n{proc.stdout[-3000:]}"
            )
        return elapsed, summary


# --- 1. no-op: runner with manifest vs plain alembic ----------------------------------------


def bench_noop(big: Project, iterations: int, timeout: float) -> bool:
    print(f"\n== 1. no-op upgrade at {big.revisions} revisions: runner (manifest) vs plain alembic")
    print(f"  runner:  {' '.join(big.runner_cmd)}")
    print(f"  alembic: {' '.join(big.alembic_cmd)}")
    warm_r, _ = big.noop(timeout)
    warm_a, proc = timed(big.alembic_cmd, big.env, timeout)
    check_alembic(proc)
    print(
        f"  warm-up (not counted): runner {warm_r * 1000:.0f} ms, alembic {warm_a * 1000:.0f} ms;"
        f" then {iterations} of each, alternating runner, alembic, ..."
    )
    runner_s: list[float] = []
    alembic_s: list[float] = []
    inside: list[float] = []
    for _ in range(iterations):
        elapsed, summary = big.noop(timeout)
        runner_s.append(elapsed)
        inside.append(float(summary.get("total_ms", float("nan"))))
        elapsed, proc = timed(big.alembic_cmd, big.env, timeout)
        check_alembic(proc)
        alembic_s.append(elapsed)
    print("  " + line("runner upgrade", runner_s))
    print("  " + line("alembic upgrade head", alembic_s))
    r, a = describe(runner_s), describe(alembic_s)
    speedup = a["median"] / r["median"]
    print(
        f"  runner's summary total_ms (command start to summary, without interpreter start-up "
        f"and the runner's imports): median {statistics.median(inside):.0f} ms"
    )
    print(
        f"  speed-up alembic/runner: median {speedup:.2f}x   min/min {a['min'] / r['min']:.2f}x"
        f"   (runner/alembic median ratio {r['median'] / a['median']:.3f})"
    )
    breakdown(big, iterations, timeout)
    met = speedup >= NOOP_TARGET
    print(
        f"target 1: no-op runner at least {NOOP_TARGET}x faster than plain alembic at "
        f"{big.revisions} revisions -> {'MET' if met else 'NOT MET'} ({speedup:.2f}x)"
    )
    return met


FLOOR_CMDS = {
    "python -c pass (interpreter start-up)": "pass",
    "runner imports only": "import runner.cli.main, runner.commands.migrate",  # psycopg, pydantic, structlog
    "alembic+sqlalchemy+psycopg imports only": (
        "import alembic.config, alembic.command, alembic.runtime.environment, alembic.op, "
        "sqlalchemy, sqlalchemy.dialects.postgresql.psycopg, psycopg"
    ),
}


def breakdown(big: Project, iterations: int, timeout: float) -> None:
    """Where a no-op process's time goes: start-up and import floors, measured the same way
    (whole processes, same environment and bytecode), interleaved with the runner's no-op
    itself so that the parts add up under the same conditions."""
    print(
        f"  breakdown ({iterations} rounds after the pairs above, each round: runner no-op, "
        "then the floors; same env and bytecode):"
    )
    times: dict[str, list[float]] = {"runner no-op (again)": []} | {k: [] for k in FLOOR_CMDS}
    inside: list[float] = []
    for _ in range(iterations):
        elapsed, summary = big.noop(timeout)
        times["runner no-op (again)"].append(elapsed)
        inside.append(float(summary.get("total_ms", float("nan"))))
        for title, code in FLOOR_CMDS.items():
            elapsed, proc = timed([big.python, "-c", code], big.env, timeout)
            if proc.returncode != 0:
                raise Failed(f"{code!r} exited {proc.returncode}: {proc.stderr[-2000:]}")
            times[title].append(elapsed)
    for title, values in times.items():
        print("    " + line(title[:22], values) + f"   <- {title}")
    total = statistics.median(times["runner no-op (again)"])
    floor = statistics.median(times["python -c pass (interpreter start-up)"])
    imports = statistics.median(times["runner imports only"])
    work = statistics.median(inside)
    print(
        f"  runner no-op {total * 1000:.0f} ms ~ interpreter {floor * 1000:.0f} ms + the runner's "
        f"imports {(imports - floor) * 1000:.0f} ms + in-process {work:.0f} ms (summary "
        f"total_ms) + rest {(total - imports) * 1000 - work:.0f} ms (argparse, log set-up, exit; "
        "medians of separate runs, so only indicative)"
    )
    alembic_imports = statistics.median(times["alembic+sqlalchemy+psycopg imports only"])
    print(
        f"  the runner's own imports (no alembic/sqlalchemy) take {(imports - floor) * 1000:.0f} ms, "
        f"{(imports - floor) / (total - floor) * 100:.0f} % of its no-op after interpreter "
        f"start-up; alembic+sqlalchemy+psycopg imports take "
        f"{(alembic_imports - floor) * 1000:.0f} ms"
    )


# --- 2. no-op flatness ----------------------------------------------------------------------


def bench_flat(projects: list[Project], iterations: int, timeout: float) -> bool:
    sizes = ", ".join(str(p.revisions) for p in projects)
    print(f"\n== 2. no-op upgrade with the manifest at {sizes} revisions (interleaved)")
    for project in projects:
        project.noop(timeout)  # warm-up (the big one is warm already; cheap)
    times: dict[int, list[float]] = {p.revisions: [] for p in projects}
    inside: dict[int, list[float]] = {p.revisions: [] for p in projects}
    for i in range(iterations):
        order = projects[i % len(projects) :] + projects[: i % len(projects)]  # rotate the order
        for project in order:
            elapsed, summary = project.noop(timeout)
            times[project.revisions].append(elapsed)
            inside[project.revisions].append(float(summary.get("total_ms", float("nan"))))
    print(f"  {iterations} runs of each, the order rotating every round; warm-up not counted")
    for project in projects:
        print(
            "  "
            + line(f"{project.revisions:>4} revisions", times[project.revisions])
            + f"   (summary total_ms median {statistics.median(inside[project.revisions]):.0f})"
        )
    medians = {n: statistics.median(v) for n, v in times.items()}
    spread = max(medians.values()) / min(medians.values())
    low = min(medians, key=medians.__getitem__)
    high = max(medians, key=medians.__getitem__)
    print(
        f"  max/min of the medians: {spread:.3f} (slowest {high}, fastest {low}); "
        f"in-process total_ms max/min "
        f"{max(statistics.median(v) for v in inside.values()) / max(1e-9, min(statistics.median(v) for v in inside.values())):.3f}"
    )
    met = spread <= FLAT_TARGET
    print(
        f"target 2: no-op flat over {sizes} revisions (max/min <= {FLAT_TARGET:.2f}) -> "
        f"{'MET' if met else 'NOT MET'} ({spread:.3f})"
    )
    return met


# --- 3. full upgrade --------------------------------------------------------------------------

KINDS = {
    "runner": "the runner; env.py says nothing, so it commits each revision (its default)",
    "alembic": "plain alembic, env.py with transaction_per_migration=True (as the service's "
    "alembic/env.py): one transaction per revision, like the runner",
    "runner-1tx": "the runner, env.py with transaction_per_migration=False: one transaction "
    "for the whole upgrade (env.py's explicit choice wins)",
    "alembic-1tx": "plain alembic, env.py says nothing: one transaction for the whole upgrade "
    "(Alembic's template default)",
}
PAIRS = (("runner", "alembic"), ("runner-1tx", "alembic-1tx"), ("runner", "alembic-1tx"))


def bench_full(
    cluster: Any,
    password: str,
    big: Project,
    runs: int,
    timeout: float,
    cache: Path | None,
    profile: bool | None,
    tmp: Path,
) -> bool:
    n = big.revisions
    print(f"\n== 3. full upgrade, empty database -> {n} revisions: runner vs plain alembic")
    print(
        "  a fresh database per run (created before, dropped after; not timed); the runner "
        "finds a current manifest, sees pending revisions and loads the files"
    )
    for kind, title in KINDS.items():
        print(f"  {kind}: {title}")

    def one(
        kind: str, tag: str, cmd_prefix: tuple[str, ...] = ()
    ) -> tuple[float, dict[str, Any], dict[str, int]]:
        db = f"full_{tag}"
        create_database(cluster, password, db)
        try:
            env = with_bytecode(runner_env(cluster.url(db), big.ini), cache)
            if kind == "runner" and cmd_prefix:  # the runner ends with os._exit: profile main()
                cmd = [
                    big.python,
                    "-c",
                    "import cProfile, sys; sys.argv = ['migration-runner', "
                    f"'upgrade']; cProfile.run('from runner.cli.main import main; main()', {cmd_prefix[-1]!r})",
                ]
            elif kind.startswith("runner"):
                cmd = [big.python, "-m", "runner", "upgrade"]
            else:
                ini = big.per_revision_ini if kind == "alembic" else big.ini
                cmd = [big.python, *cmd_prefix, "-m", "alembic", "-c", str(ini), "upgrade", "head"]
            if kind == "runner-1tx":  # same files, same (current) manifest, its own env.py
                env = dict(
                    env,
                    ALEMBIC_CONFIG=str(big.one_transaction_ini),
                    MIGRATION_MANIFEST=str(big.ini.parent / "migration-manifest.json"),
                )
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            elapsed, proc = timed(cmd, env, timeout)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[kind].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            summary: dict[str, Any] = {}
            if kind.startswith("runner"):
                summary = check_runner(proc, "migrated")
                if len(summary.get("applied") or []) != n:
                    raise Failed(f"runner applied {len(summary.get('applied') or [])} of {n}")
            elif proc.returncode != 0:
                raise Failed(f"{kind} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            if version(cluster, password, db) != [head_of(n)]:
                raise Failed(f"{kind}: {db} is not at head after the full upgrade")
            counters = db_counters(cluster, password, db)
            return elapsed, summary, counters
        finally:
            drop_database(cluster, password, db)

    kinds = tuple(KINDS)
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}  # user+sys of the process
    warm = {kind: one(kind, f"warm_{i}")[0] for i, kind in enumerate(kinds)}
    print(
        "  warm-up (not counted): "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in warm.items())
        + f"; then {runs} rounds of {', '.join(kinds)}, the order rotating every round"
    )
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for values in cpu.values():
        values.clear()  # the warm-up runs do not count
    inside: list[float] = []
    counters: dict[str, dict[str, int]] = {}
    for i in range(runs):
        for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
            elapsed, summary, counters[kind] = one(kind, f"{kind.replace('-', '_')}_{i}")
            times[kind].append(elapsed)
            if kind == "runner":
                inside.append(float(summary.get("total_ms", float("nan"))))
    for kind in kinds:
        print("  " + line(kind, times[kind]))
    print(f"  runner's summary total_ms: median {statistics.median(inside):.0f} ms")
    ratios = {}
    for mine, theirs in PAIRS:
        r, a = describe(times[mine]), describe(times[theirs])
        ratios[mine, theirs] = r["median"] / a["median"]
        c_mine, c_theirs = statistics.median(cpu[mine]), statistics.median(cpu[theirs])
        print(
            f"  {mine}/{theirs}: median {ratios[mine, theirs]:.3f}   min/min {r['min'] / a['min']:.3f}"
            f"   per revision {r['median'] * 1000 / n:.2f} vs {a['median'] * 1000 / n:.2f} ms"
            f"   CPU time (user+sys, moves less with other load; the server's share not "
            f"included) {c_mine * 1000:.0f} vs {c_theirs * 1000:.0f} ms, ratio {c_mine / c_theirs:.3f}"
        )
    for kind in kinds:
        c = counters[kind]
        print(
            f"  server counters, last {kind} run's database: {c['commits']} commits, "
            f"{c['rollbacks']} rollbacks, {c['inserted']} rows inserted, {c['updated']} updated "
            "(includes the bench's own few sessions)"
        )
    met = ratios["runner", "alembic"] <= FULL_TARGET
    print(
        f"target 3: full upgrade within {round((FULL_TARGET - 1) * 100)} % of plain alembic doing "
        f"the same work, one transaction per revision (ratio <= {FULL_TARGET:.2f}) -> "
        f"{'MET' if met else 'NOT MET'} ({ratios['runner', 'alembic']:.3f}); both in one "
        f"transaction: {ratios['runner-1tx', 'alembic-1tx']:.3f}; the runner's default against "
        f"Alembic's: {ratios['runner', 'alembic-1tx']:.3f} (two more round trips per revision)"
    )

    if profile or (profile is None and not met):
        print(
            "\n== 3b. where the time goes: one cProfile'd full upgrade of each "
            "(profiling inflates everything; compare the two, not with the timings above)"
        )
        out = {}
        for kind in ("runner", "alembic"):
            path = tmp / f"{kind}.prof"
            elapsed, _, _ = one(kind, f"prof_{kind}", ("-m", "cProfile", "-o", str(path)))
            out[kind] = pstats.Stats(str(path))
            print(f"  {kind}: {elapsed * 1000:.0f} ms under cProfile")
        report_profiles(out, n)
    return met


def _short(key: tuple[str, int, str]) -> str:
    filename, lineno, func = key
    if filename == "~":
        return func
    filename = re.sub(r"^.*/site-packages/", "", filename)
    filename = filename.replace(str(ROOT) + "/", "")
    filename = re.sub(r"^.*/lib/python3\.\d+/", "<stdlib>/", filename)
    return f"{filename}:{lineno}({func})"


def _wrapper(key: tuple[str, int, str]) -> bool:
    filename, _lineno, func = key
    return (
        filename.startswith("<")
        or (filename == "~" and "exec" in func)
        or filename.endswith("__main__.py")
    )


def report_profiles(stats: dict[str, pstats.Stats], revisions: int) -> None:
    for kind, st in stats.items():
        raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
        total = max(v[3] for v in raw.values())
        print(
            f"\n  {kind}: top 20 by cumulative time (total {total * 1000:.0f} ms; the entry "
            "wrappers <frozen ...>, exec and the __main__ modules left out)"
        )
        print(f"    {'cum ms':>8} {'self ms':>8} {'calls':>8}  function")
        shown = [(k, v) for k, v in raw.items() if not _wrapper(k)]
        for key, (_cc, nc, tt, ct, _callers) in sorted(shown, key=lambda kv: -kv[1][3])[:20]:
            print(f"    {ct * 1000:8.0f} {tt * 1000:8.0f} {nc:8d}  {_short(key)}")
        print(f"  {kind}: top 10 by self time")
        for key, (_cc, nc, tt, ct, _callers) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:10]:
            print(f"    {ct * 1000:8.0f} {tt * 1000:8.0f} {nc:8d}  {_short(key)}")

    def pick(kind: str, file_part: str, func: str) -> tuple[int, float]:
        raw = stats[kind].stats  # type: ignore[attr-defined]
        found = [(v[1], v[3]) for k, v in raw.items() if file_part in k[0] and k[2] == func]
        return (sum(c for c, _ in found), sum(t for _, t in found)) if found else (0, 0.0)

    print(f"\n  selected entries (calls, cumulative ms under cProfile; {revisions} revisions):")
    rows = [
        ("psycopg Cursor.execute (statements)", "psycopg/cursor.py", "execute"),
        ("psycopg Connection.execute", "psycopg/connection.py", "execute"),
        ("psycopg commit", "psycopg/connection.py", "commit"),
        ("sqlalchemy exec_driver_sql", "sqlalchemy/engine/base.py", "exec_driver_sql"),
        ("alembic ScriptDirectory.run_env", "alembic/script/base.py", "run_env"),
        (
            "alembic MigrationContext.run_migrations",
            "alembic/runtime/migration.py",
            "run_migrations",
        ),
        (
            "alembic RevisionMap._revision_map (imports the 500 files)",
            "alembic/script/revision.py",
            "_revision_map",
        ),
        ("runner migrate before_revision (log)", "runner/migrate.py", "before_revision"),
        (
            "runner migrate before_statement (limits when they change)",
            "runner/migrate.py",
            "before_statement",
        ),
        ("runner migrate on_commit (ledger rows + COMMIT, log)", "runner/migrate.py", "on_commit"),
        ("runner ledger.write_and_commit", "runner/database/ledger.py", "write_and_commit"),
        ("runner scripts.load", "runner/scripts/load.py", "load"),
        ("runner scripts.file_checksum", "runner/scripts/load.py", "file_checksum"),
        ("runner manifest.read", "runner/scripts/manifest.py", "read"),
        ("structlog log call (_proxy_to_logger)", "structlog/_base.py", "_proxy_to_logger"),
        ("runner interrupt.check (before every statement)", "runner/process/interrupt.py", "check"),
        (
            "runner migrate BlockerWatch._run (thread; not in main profile)",
            "runner/migrate.py",
            "_run",
        ),
    ]
    print(f"    {'':58} {'runner':>20} {'alembic':>20}")
    for title, file_part, func in rows:
        cells = []
        for kind in ("runner", "alembic"):
            calls, cum = pick(kind, file_part, func)
            cells.append(f"{calls:6d} {cum * 1000:8.0f} ms" if calls else f"{'-':>20}")
        print(f"    {title:58} {cells[0]:>20} {cells[1]:>20}")


# --- 4. imports on the no-op path -------------------------------------------------------------

IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def bench_imports(big: Project, timeout: float, rounds: int = 3) -> None:
    print(
        f"\n== 4. imports of the no-op runner process (-X importtime, {rounds} runs, median per "
        "module)"
    )
    cmd = [big.python, "-X", "importtime", "-m", "runner", "upgrade"]
    per_module: dict[str, list[tuple[int, int, int]]] = {}
    counts = {"alembic": [], "sqlalchemy": [], "psycopg": []}  # type: dict[str, list[int]]
    totals: list[float] = []
    for _ in range(rounds):
        elapsed, proc = timed(cmd, big.env, timeout)
        check_runner(proc, "up_to_date")
        totals.append(elapsed)
        lines = [t for t in proc.stderr.splitlines() if t.startswith("import time:")]
        # by top-level package: runner.scripts.alembic_config is not Alembic
        packages = [m.group(4).split(".")[0] for m in map(IMPORT_LINE.match, lines) if m]
        for name, found in counts.items():
            found.append(packages.count(name))
        for text in lines:
            m = IMPORT_LINE.match(text)
            if m:
                depth = (len(m.group(3)) - 1) // 2
                per_module.setdefault(m.group(4), []).append(
                    (int(m.group(1)), int(m.group(2)), depth)
                )
    print(
        f"  {' '.join(cmd)} (bytecode as above); wall {statistics.median(totals) * 1000:.0f} ms "
        "median, importtime adds overhead"
    )
    for name, values in counts.items():
        print(
            f"  modules of {name!r}: {values}"
            + ("   <- expected 0" if name != "psycopg" else "   (needed: it connects)")
        )
    clean = all(v == 0 for name, vs in counts.items() if name != "psycopg" for v in vs)
    print(f"  no-op path imports neither alembic nor sqlalchemy -> {'YES' if clean else 'NO'}")
    rows = [
        (statistics.median(c for _, c, _ in v), statistics.median(s for s, _, _ in v), v[0][2], k)
        for k, v in per_module.items()
    ]
    top_level = sum(c for c, _, d, _ in rows if d == 0)
    print(
        f"  sum of top-level cumulative import times: {top_level / 1000:.1f} ms "
        f"({len(rows)} modules)"
    )
    print(
        "  top 10 by cumulative import time (depth 0 = imported directly by the entry point "
        "or startup):"
    )
    print(f"    {'cum ms':>8} {'self ms':>8} {'depth':>5}  module")
    for cum, self_us, depth, name in sorted(rows, reverse=True)[:10]:
        print(f"    {cum / 1000:8.1f} {self_us / 1000:8.1f} {depth:5d}  {name}")
    print("  top 10 by self time:")
    for cum, self_us, depth, name in sorted(rows, key=lambda r: -r[1])[:10]:
        print(f"    {cum / 1000:8.1f} {self_us / 1000:8.1f} {depth:5d}  {name}")


# --- main -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    bytecode = args.bytecode == "cached"
    verdicts: dict[str, bool] = {}
    with throwaway_cluster() as (cluster, password), temp_dir("bench-history-") as tmp:
        print("== history length: no-op and full upgrade, runner vs plain alembic")
        for text in machine(cluster, password):
            print("  " + text)
        with contextlib.suppress(OSError):
            print(
                f"  load average at start: {Path('/proc/loadavg').read_text().split()[:3]} "
                "(a shared machine: other work competes for the CPUs)"
            )
        cache = tmp / "pycache" if bytecode else None
        print(
            "  bytecode: "
            + (
                "cached in a temporary PYTHONPYCACHEPREFIX (filled by the set-up "
                "and warm-up runs, which are not counted)"
                if bytecode
                else "none: every process compiles every module (and revision file) from source"
            )
        )
        venv = runtime_venv(tmp / "venv")
        print(f"  python: {venv.python}, the runtime virtualenv: {venv.describe()}")
        print(
            f"  cwd {Path(venv.python).parent} (holds no package: the installed runner runs); "
            f"DATABASE_URL -> 127.0.0.1:{cluster.port}/<db>; ALEMBIC_CONFIG -> "
            "the generated project; MIGRATION_LOG_FORMAT=json"
        )
        print(f"  iterations {args.iterations} (no-op), full runs {args.full_runs}")
        print(
            "\n== set-up: generated projects (revision files dated an hour back, as a checkout "
            "before an image build; `runner manifest` once each, then migrated to head by the "
            "runner; every no-op run is checked to use the manifest with 0 files hashed)"
        )
        sizes = sorted({*SMALL_SIZES, args.revisions})
        projects = [
            Project(cluster, password, tmp / f"p{n}", n, cache, args.timeout, venv.python)
            for n in sizes
        ]
        big = projects[-1]

        verdicts["1 no-op >= 2.5x faster"] = bench_noop(big, args.iterations, args.timeout)
        verdicts["2 no-op flat <= 1.20"] = bench_flat(projects, args.iterations, args.timeout)
        verdicts["3 full within 10 %"] = bench_full(
            cluster, password, big, args.full_runs, args.timeout, cache, args.profile, tmp
        )
        bench_imports(big, args.timeout)
        for project in projects:  # nothing moved during the benchmark
            if version(cluster, password, project.db) != [head_of(project.revisions)]:
                raise Failed(f"{project.db} moved during the benchmark")
        with contextlib.suppress(OSError):
            print(f"\n  load average at end: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"\n== summary ({time.monotonic() - started:.0f} s, bytecode {args.bytecode})")
    for name, met in verdicts.items():
        print(f"  target {name}: {'MET' if met else 'NOT MET'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        "-n",
        type=int,
        default=None,
        help="measured no-op runs of each command (default 15; 5 with --quick)",
    )
    parser.add_argument(
        "--full-runs",
        type=int,
        default=None,
        help="measured rounds of full upgrades (default 8; 1 with --quick)",
    )
    parser.add_argument(
        "--revisions",
        type=int,
        default=500,
        help="the long history (default 500); section 2 adds 10 and 100",
    )
    parser.add_argument(
        "--bytecode",
        choices=("cached", "none"),
        default="cached",
        help="cached (default): .pyc files in a temporary PYTHONPYCACHEPREFIX; "
        "none: compile from source in every process",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about a minute)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--profile",
        dest="profile",
        action="store_true",
        default=None,
        help="always profile one full upgrade of each (default: only when target 3 is missed)",
    )
    group.add_argument("--no-profile", dest="profile", action="store_false", help="never profile")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="give up on any single command after this many seconds (default 120)",
    )
    args = parser.parse_args()
    args.iterations = args.iterations or (5 if args.quick else 15)
    args.full_runs = args.full_runs or (1 if args.quick else 8)
    if args.iterations < 1 or args.full_runs < 1 or args.revisions <= max(SMALL_SIZES):
        parser.error(f"--iterations and --full-runs must be >= 1, --revisions > {max(SMALL_SIZES)}")
    try:
        return run(args)
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
