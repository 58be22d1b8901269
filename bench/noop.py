"""No-op upgrade cost: ``python -m runner upgrade`` on a database already at head, as a whole
process, against plain ``python -m alembic upgrade head`` on the same database.

    uv run python bench/noop.py [--iterations 20] [--revisions N]

The two commands run alternately (runner, alembic, runner, alembic, ...) after one warm-up
run of each, so drift on the machine hits both alike. By default they use the repository's
own service migrations (/work/main/alembic.ini); with ``--revisions N`` they use a generated
project with a linear chain of N trivial revisions instead. Target: the runner is no slower
than plain Alembic (median runner / median alembic <= 1.00).
"""

from __future__ import annotations

import argparse
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

from devtools.demo import summary_event

DBNAME = "noop"


def timed(
    cmd: list[str], env: dict[str, str], timeout: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    # the working directory is the interpreter's bin directory: `python -m` puts it first on
    # sys.path and it holds no package, so the installed runner (not this checkout's) runs
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=Path(cmd[0]).parent, capture_output=True, text=True, timeout=timeout
    )
    return time.perf_counter() - started, proc


class Failed(RuntimeError):
    pass


def check_runner(proc: subprocess.CompletedProcess[str], expect: str) -> dict[str, Any]:
    summary = summary_event(proc.stdout)
    if proc.returncode != 0 or summary.get("outcome") != expect:
        raise Failed(
            f"runner exited {proc.returncode} with outcome {summary.get('outcome')!r} "
            f"(expected {expect!r}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        )
    return summary


def check_alembic(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0 or "Running upgrade" in proc.stderr + proc.stdout:
        raise Failed(
            f"alembic exited {proc.returncode} (or applied something):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )


def line(title: str, values: list[float]) -> str:
    s = describe([v * 1000 for v in values])
    return (
        f"{title:<22} median {s['median']:8.1f} ms   mean {s['mean']:8.1f} ms   "
        f"min {s['min']:8.1f} ms   max {s['max']:8.1f} ms"
    )


def run(iterations: int, revisions: int | None, timeout: float, bytecode: bool) -> int:
    with throwaway_cluster() as (cluster, password), temp_dir("bench-noop-") as tmp:
        print("== no-op upgrade: runner vs plain alembic")
        for text in machine(cluster, password):
            print("  " + text)
        create_database(cluster, password, DBNAME)
        if revisions is None:
            ini = ROOT / "alembic.ini"
            env = runner_env(cluster.url(DBNAME), ini)
            what = f"the repository's migrations ({ini})"
        else:
            ini = write_project(tmp, revisions)
            env = runner_env(cluster.url(DBNAME), ini)
            what = f"a generated chain of {revisions} trivial revisions ({ini})"
        env = with_bytecode(env, tmp / "pycache" if bytecode else None)
        venv = runtime_venv(tmp / "venv")
        print(f"  python:   {venv.python}, the runtime virtualenv: {venv.describe()}")
        runner_cmd = [venv.python, "-m", "runner", "upgrade"]
        alembic_cmd = [venv.python, "-m", "alembic", "-c", str(ini), "upgrade", "head"]
        print(f"  project:  {what}")
        print(f"  runner:   {' '.join(runner_cmd)}")
        print(f"  alembic:  {' '.join(alembic_cmd)}")
        print(
            f"  cwd {Path(venv.python).parent}, DATABASE_URL -> 127.0.0.1:{cluster.port}/{DBNAME}, "
            f"{iterations} iterations each, alternating"
        )
        print(
            "  bytecode: "
            + (
                "cached in a temporary PYTHONPYCACHEPREFIX (filled by the warm-up)"
                if bytecode
                else "none: every run compiles every module from source"
            )
        )

        elapsed, proc = timed(runner_cmd, env, timeout)
        summary = check_runner(proc, "migrated")
        print(
            f"  migrated to head with the runner in {elapsed * 1000:.0f} ms "
            f"({len(summary.get('applied') or [])} revision(s) applied)"
        )
        with connect(cluster, password, DBNAME) as conn:
            head = sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))

        warm_r, proc = timed(runner_cmd, env, timeout)
        check_runner(proc, "up_to_date")
        warm_a, proc = timed(alembic_cmd, env, timeout)
        check_alembic(proc)
        print(
            f"  warm-up (not counted): runner {warm_r * 1000:.0f} ms, alembic {warm_a * 1000:.0f} ms"
        )

        runner_s: list[float] = []
        alembic_s: list[float] = []
        in_process_ms: list[float] = []
        for _ in range(iterations):
            elapsed, proc = timed(runner_cmd, env, timeout)
            in_process_ms.append(check_runner(proc, "up_to_date").get("total_ms", float("nan")))
            runner_s.append(elapsed)
            elapsed, proc = timed(alembic_cmd, env, timeout)
            check_alembic(proc)
            alembic_s.append(elapsed)

        with connect(cluster, password, DBNAME) as conn:
            after = sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
        if after != head:
            raise Failed(f"the database moved from {head} to {after} during the benchmark")

    print("== result (wall time of the whole process)")
    print("  " + line("runner upgrade", runner_s))
    print("  " + line("alembic upgrade head", alembic_s))
    r, a = describe(runner_s), describe(alembic_s)
    print(
        f"  ratio runner/alembic: median {r['median'] / a['median']:.3f}   "
        f"mean {r['mean'] / a['mean']:.3f}   min {r['min'] / a['min']:.3f}"
    )
    wins = sum(1 for x, y in zip(runner_s, alembic_s, strict=True) if x <= y)
    print(f"  runner no slower than the alembic run right after it: {wins} of {iterations} pairs")
    inside = describe(in_process_ms)
    print(
        f"  runner's own summary total_ms (command start to summary; excludes interpreter "
        f"start-up and the runner's module imports, includes importing Alembic and "
        f"connecting): median {inside['median']:.0f} ms"
    )
    met = r["median"] <= a["median"]
    print(
        f"target: runner no slower than plain alembic (median ratio <= 1.00) -> "
        f"{'MET' if met else 'NOT MET'} ({r['median'] / a['median']:.3f})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        "-n",
        type=int,
        default=20,
        help="measured runs of each command (default 20)",
    )
    parser.add_argument(
        "--revisions",
        type=int,
        default=None,
        help="use a generated project with this many trivial revisions instead "
        "of the repository's migrations",
    )
    parser.add_argument(
        "--bytecode",
        choices=("cached", "none"),
        default="cached",
        help="cached (default): .pyc files in a temporary PYTHONPYCACHEPREFIX, "
        "as in an image with compiled bytecode; none: compile from source "
        "on every run (PYTHONDONTWRITEBYTECODE=1, no .pyc anywhere)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="give up on any single command after this many seconds (default 60)",
    )
    args = parser.parse_args()
    if args.iterations < 1 or (args.revisions is not None and args.revisions < 1):
        parser.error("--iterations and --revisions must be >= 1")
    try:
        return run(args.iterations, args.revisions, args.timeout, args.bytecode == "cached")
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
