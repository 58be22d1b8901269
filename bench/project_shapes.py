"""The project shapes of issue 22 (devtools/shapes.py): wall time of plain Alembic (or the
project's own migrate script, where plain Alembic cannot) against one runner, each on a fresh
database, median of ``--rounds`` runs; and, with ``--before REF``, the runner of git revision
REF on the same shape (its exit code, and its time when it succeeded).

    uv run --locked python bench/project_shapes.py [--rounds 3] [--before main]

Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from _bench import ROOT, create_database, runner_env, temp_dir, throwaway_cluster, with_bytecode

from devtools.shapes import SHAPES, Shape  # importable: _bench put the repository on sys.path


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    why = ""
    if proc.returncode:
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        errors = [e for e in events if e.get("event") == "error"]
        why = errors[0].get("error_code", "") if errors else proc.stderr.strip()[-80:]
    return elapsed, proc.returncode, why


def checkout(ref: str, into: Path) -> Path:
    """The ``runner`` package of git revision ``ref``, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "runner"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(shape: Shape, urls: list[str], base: dict[str, str], runner_path: Path | None):
    """(plain times, runner times, failures): each URL's database is fresh for one run."""
    root = shape.project.root
    plain, runner, failures = [], [], []
    for index, url in enumerate(urls):
        if index % 2 == 0:  # plain Alembic on even databases, the runner on odd ones
            elapsed, code, why = timed(shape.plain, root, shape.plain_env(url, base))
            (plain if code == 0 else failures).append(elapsed if code == 0 else why)
            continue
        env = {
            **runner_env(url),
            **shape.settings,
            **with_bytecode({}, Path(base["PYTHONPYCACHEPREFIX"])),
        }
        if runner_path is not None:
            env["PYTHONPATH"] = str(runner_path)
        elapsed, code, why = timed([sys.executable, "-m", "runner", "upgrade"], root, env)
        if code == 0:
            runner.append(elapsed)
        else:
            failures.append(f"exit {code} {why}")
    return plain, runner, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default=None, help="a git revision to compare with")
    args = parser.parse_args()
    rows = []
    with throwaway_cluster() as (cluster, password), temp_dir("bench-shapes-") as tmp:
        before = checkout(args.before, tmp / "before") if args.before else None
        base = with_bytecode(runner_env("unused"), tmp / "pyc")

        def url(name: str, driver: str = "psycopg") -> str:
            create_database(cluster, password, name)
            return f"postgresql+{driver}://postgres:{password}@127.0.0.1:{cluster.port}/{name}"

        for name, build in SHAPES.items():
            shape = build(tmp / name, url(f"{name}_gen"))
            # warm the bytecode cache once per shape (not timed)
            measure(shape, [url(f"{name}_w0"), url(f"{name}_w1")], base, None)
            urls = [url(f"{name}_{i}") for i in range(2 * args.rounds)]
            plain, runner, failed = measure(shape, urls, base, None)
            old = (
                measure(shape, [url(f"{name}_b{i}") for i in range(2 * args.rounds)], base, before)
                if before
                else None
            )
            rows.append((name, plain, runner, failed, old))
    print(
        "| shape | plain Alembic / own migrate (median s) | runner (median s) | runner/plain |"
        + (f" runner at {args.before} |" if args.before else "")
    )
    print("|---|---|---|---|" + ("---|" if args.before else ""))
    for name, plain, runner, failed, old in rows:
        p = statistics.median(plain) if plain else float("nan")
        r = statistics.median(runner) if runner else float("nan")
        line = f"| {name} | {p:.2f} | {r:.2f}{' FAILED ' + str(failed) if failed else ''} | {r / p:.2f} |"
        if old is not None:
            _, old_runner, old_failed = old
            line += (
                f" exit≠0: {old_failed[0]} |"
                if old_failed
                else f" {statistics.median(old_runner):.2f} |"
            )
        print(line)


if __name__ == "__main__":
    main()
