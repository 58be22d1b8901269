"""A backfill while the app writes: one ``UPDATE`` against ``backfill()`` (issue 24).

    uv run --group bench python bench/backfill.py [--rows 2000000] [--batch 1000]

A table ``calls`` of ``--rows`` rows; an "app" thread updates a random row at a time (an
UPDATE by primary key, what a call-status write does) for as long as the migration runs.
Two runner processes, each applying one revision that fills the new column ``new_field``:

* ``update``: ``op.execute("UPDATE calls SET new_field = 'default' WHERE new_field IS NULL")``
* ``backfill``: ``backfill("calls", set="new_field = 'default'", where="new_field IS NULL")``

For each: the time the runner took (the process, start to exit) and the app's write
latencies while it ran (p50, p99, max, and how many writes it got through). The runner
runs with the runtime virtualenv's python (``_bench.runtime_venv``: made as the image makes
it, in a temporary directory). Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path

from _bench import (
    connect,
    create_database,
    percentile,
    runner_env,
    runtime_venv,
    temp_dir,
    throwaway_cluster,
)

UPDATE = "op.execute(\"UPDATE calls SET new_field = 'default' WHERE new_field IS NULL\")"
BACKFILL = (
    "from runner import backfill\n"
    "backfill('calls', set=\"new_field = 'default'\", where='new_field IS NULL', "
    "key='id', batch_size={batch})"
)


def project(root: Path, body: str) -> Path:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "migrations" / "env.py").write_text(
        "from alembic import context\n"
        "connection = context.config.attributes['connection']\n"
        "context.configure(connection=connection)\n"
        "with context.begin_transaction():\n    context.run_migrations()\n"
    )
    indented = "\n".join("    " + line for line in body.splitlines())
    (versions / "f1_fill.py").write_text(
        f'"""fill new_field"""\nfrom alembic import op\n\nrevision = "f1"\n'
        f"down_revision = None\n\n\ndef upgrade():\n{indented}\n\n\ndef downgrade():\n    pass\n"
    )
    return root / "alembic.ini"


class App:
    """Writes one random row at a time until stopped; its latencies in seconds."""

    def __init__(self, conn: object, rows: int) -> None:
        self.conn, self.rows = conn, rows
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            self.conn.execute(  # type: ignore[attr-defined]
                "UPDATE calls SET status = 'done' WHERE id = %s", (random.randint(1, self.rows),)
            )
            self.latencies.append(time.perf_counter() - began)


def scenario(python: str, url: str, ini: Path, conn: object, rows: int) -> dict[str, float]:
    app = App(conn, rows)
    app.thread.start()
    time.sleep(1.0)  # the app's steady state first
    app.latencies.clear()
    began = time.perf_counter()
    done = subprocess.run(
        [python, "-m", "runner", "upgrade"],
        env=runner_env(url, ini),
        capture_output=True,
        text=True,
        cwd=ini.parent,
    )
    took = time.perf_counter() - began
    app.stop.set()
    app.thread.join()
    if done.returncode != 0:
        raise SystemExit(f"runner failed ({done.returncode}):\n{done.stdout[-3000:]}")
    lat = app.latencies
    summary = json.loads(done.stdout.splitlines()[-1])
    slowest = max((b["batch_ms_max"] for b in summary["backfills"]), default=float("nan"))
    return {
        "batch_ms_max": slowest,
        "runner_s": took,
        "writes": len(lat),
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    with temp_dir("bench-backfill-") as tmp, throwaway_cluster() as (cluster, password):
        python = runtime_venv(tmp / "venv").python
        for name, body in (("update", UPDATE), ("backfill", BACKFILL.format(batch=args.batch))):
            create_database(cluster, password, name)
            with connect(cluster, password, name) as conn:
                conn.execute(
                    "CREATE TABLE calls (id bigint PRIMARY KEY, status text, new_field text)"
                )
                conn.execute(
                    "INSERT INTO calls (id, status) SELECT g, 'new' FROM generate_series(1, %s) g",
                    (args.rows,),
                )
                conn.execute("VACUUM ANALYZE calls")
                url = f"postgresql://postgres:{password}@127.0.0.1:{cluster.port}/{name}"
                ini = project(tmp / name, body)
                results[name] = scenario(python, url, ini, conn, args.rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"rows: {args.rows:,}, batch_size: {args.batch}, load average at the end: {load}\n")
    print("| migration | runner took | app writes | app p50 | app p99 | app max | slowest batch |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['runner_s']:.1f} s | {int(r['writes']):,} | {r['p50_ms']:.1f} ms "
            f"| {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms | {r['batch_ms_max']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
