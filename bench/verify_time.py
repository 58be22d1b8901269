"""How long ``verify`` takes: on the service's own migrations, and on a generated history of
100 revisions of the kinds real ones have (new tables with foreign keys, added columns,
indexes, backfills, SET NOT NULL, enums), each with a correct downgrade and models that match.

    uv run python bench/verify_time.py [--revisions 100] [--rounds 3]

Each round: a throwaway PostgreSQL started by verify itself (as `migration-runner verify`
without --database-url does), every check on (lint included), timed from the start; and,
for the generated history, the same checks against an already running cluster, so the
cluster's start-up is separated from the checks' own cost. Prints medians; asserts nothing
but that every run passed (a failing run is no measurement).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, runtime_venv, temp_dir  # puts the repository on sys.path

from devtools.pgcluster import find_bindir
from devtools.projects import History
from runner.checklist import lint, scratch, verify
from runner.scripts import load as scripts


def generate(root: Path, revisions: int) -> History:
    """A linear history of ``revisions`` revisions and a models.py matching its head."""
    history = History(root)
    tables: dict[str, list[str]] = {}  # table -> model column sources
    indexes: list[str] = []
    kinds = ("table", "column", "index", "backfill", "not_null", "enum")
    pending_not_null: list[tuple[str, str]] = []
    for index in range(revisions):
        kind = kinds[index % len(kinds)] if tables else "table"
        last = f"t{len(tables) - 1:03d}" if tables else None
        if kind == "table":
            name = f"t{len(tables):03d}"
            cols = [
                'sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True)',
                'sa.Column("name", sa.Text, nullable=False)',
            ]
            if last:
                cols.append(
                    f'sa.Column("parent_id", sa.BigInteger, sa.ForeignKey("{last}.id"), nullable=False)'
                )
            history.add(f'op.create_table("{name}", {", ".join(cols)})', f'op.drop_table("{name}")')
            tables[name] = cols
        elif kind == "column":
            col = f"c{index:03d}"
            history.add(
                f'op.add_column("{last}", sa.Column("{col}", sa.Integer, nullable=True))',
                f'op.drop_column("{last}", "{col}")',
            )
            tables[last].append(f'sa.Column("{col}", sa.Integer, nullable=True)')
            pending_not_null.append((last, col))
        elif kind == "index":
            history.add(
                f"with op.get_context().autocommit_block():\n"
                f'    op.create_index("ix_{last}_name", "{last}", ["name"], postgresql_concurrently=True)',
                f'op.drop_index("ix_{last}_name", table_name="{last}")',
            )
            indexes.append(f'sa.Index("ix_{last}_name", {last}.c.name)')
        elif kind == "backfill" and pending_not_null:
            table, col = pending_not_null[-1]
            history.add(f'op.execute("UPDATE {table} SET {col} = 0 WHERE {col} IS NULL")')
        elif kind == "not_null" and pending_not_null:
            table, col = pending_not_null.pop()
            history.add(  # a contract revision: in an expand one, lint fails SET NOT NULL
                f'op.alter_column("{table}", "{col}", nullable=False)',
                f'op.alter_column("{table}", "{col}", nullable=True)',
                header='migration_runner = {"phase": "contract"}',
            )
            sources = tables[table]
            sources[sources.index(f'sa.Column("{col}", sa.Integer, nullable=True)')] = (
                f'sa.Column("{col}", sa.Integer, nullable=False)'
            )
        else:  # an enum-typed column, and a downgrade that drops the type too
            col, enum = f"e{index:03d}", f"mood{index:03d}"
            history.add(
                f"op.execute(\"CREATE TYPE {enum} AS ENUM ('a', 'b')\")\n"
                f'op.add_column("{last}", sa.Column("{col}", sa.Enum("a", "b", name="{enum}", create_type=False)))',
                f'op.drop_column("{last}", "{col}")\nop.execute("DROP TYPE {enum}")',
            )
            tables[last].append(f'sa.Column("{col}", sa.Enum("a", "b", name="{enum}"))')
    body = "".join(
        f'{name} = sa.Table("{name}", metadata, {", ".join(cols)})\n'
        for name, cols in tables.items()
    )
    history.models(body + "".join(f"{ix}\n" for ix in indexes))
    return history


def timed_verify(loaded: scripts.Loaded, url: Any) -> tuple[float, verify.VerifyResult]:
    started = time.monotonic()
    run_lint = lambda lo, since: lint.run_lint(lo, since=since)  # noqa: E731
    if url is None:
        with scratch.throwaway_database() as own:
            result = verify.run_verify(loaded, own, lint=run_lint)
    else:
        result = verify.run_verify(loaded, url, lint=run_lint)
    elapsed = time.monotonic() - started
    if not result.ok:
        sys.exit("verify failed, no measurement:\n" + "\n".join(f.message for f in result.failures))
    return elapsed, result


def in_verify_venv() -> int | None:
    """Run this script again with the python of the runtime virtualenv with the ``verify``
    extra (made as the image makes it), unless this is that run: its exit status, or None."""
    if os.environ.get("BENCH_VERIFY_VENV"):
        return None
    with temp_dir("bench-verify-") as tmp:
        venv = runtime_venv(tmp / "venv", ("verify",))
        print(f"python: {venv.python}, {venv.describe()}", flush=True)
        env = dict(os.environ, BENCH_VERIFY_VENV=str(venv.path))
        return subprocess.run([venv.python, __file__, *sys.argv[1:]], env=env).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    status = in_verify_venv()
    if status is not None:
        sys.exit(status)
    print(
        f"nproc {os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}, "
        f"PostgreSQL {find_bindir().parent.name}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp) / "generated", args.revisions)
        cases = {
            "service (alembic/)": ROOT / "alembic.ini",
            f"generated ({args.revisions} revisions)": generated.ini,
        }
        for label, ini in cases.items():
            own, warm = [], []
            for _ in range(args.rounds):
                loaded = scripts.load(ini)  # as the command does, once per run
                seconds, result = timed_verify(loaded, None)
                own.append(seconds)
                with scratch.throwaway_database() as url:
                    warm.append(timed_verify(scripts.load(ini), url)[0])
            print(
                f"{label}: verify with its own PostgreSQL median {statistics.median(own):.2f} s "
                f"(min {min(own):.2f}, max {max(own):.2f}); checks alone median "
                f"{statistics.median(warm):.2f} s; {result.revisions_walked} revisions walked, "
                f"{len(result.lint.findings)} lint findings (none an error)"
            )


if __name__ == "__main__":
    main()
