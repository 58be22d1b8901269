"""Shared pieces of the benchmarks: a throwaway cluster, generated Alembic projects, the
runner's environment, machine facts and small statistics helpers.

Not a test helper: nothing here asserts. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `runner` is installed editable, but be explicit
    sys.path.insert(0, str(ROOT))

from devtools.pgcluster import Cluster  # noqa: E402

# The shared-connection env.py: migrate on the runner's connection when it passes one, else
# (plain `alembic upgrade`) build an engine from the same settings the runner reads.
from devtools.projects import ENV_PY  # noqa: E402  (the same env.py the tests use)

REVISION_PY = '''\
"""bench step {index}"""
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT 1")


def downgrade():
    pass
'''


def write_project(
    root: Path,
    revisions: int,
    transaction_per_migration: bool | None = None,
    versions_of: Path | None = None,
) -> Path:
    """An Alembic project in ``root`` with a linear chain of ``revisions`` trivial revisions
    (each ``op.execute("SELECT 1")``); returns the path of its alembic.ini.
    ``transaction_per_migration``: what env.py passes to ``context.configure`` (None: nothing,
    so plain Alembic runs the whole upgrade in one transaction and the runner, by default,
    commits each revision; True: as the service's alembic/env.py; False: one transaction,
    for the runner too). ``versions_of``: use the revision files of that project (its
    alembic.ini) instead of writing new ones, so that env.py variants run the same files."""
    ini = root / "alembic.ini"
    (root / "migrations").mkdir(parents=True)
    env_py = (
        ENV_PY
        if transaction_per_migration is None
        else ENV_PY.replace(
            "target_metadata=None)",
            f"target_metadata=None, transaction_per_migration={transaction_per_migration})",
        )
    )
    (root / "migrations" / "env.py").write_text(env_py)
    if versions_of is not None:
        ini.write_text(
            "[alembic]\nscript_location = %(here)s/migrations\nversion_locations = "
            f"{versions_of.parent / 'migrations' / 'versions'}\n"
        )
        return ini
    versions = root / "migrations" / "versions"
    versions.mkdir()
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    down = None
    for index in range(1, revisions + 1):
        rev = f"b{index:011x}"
        (versions / f"{rev}_step_{index}.py").write_text(
            REVISION_PY.format(index=index, rev=rev, down=down)
        )
        down = rev
    return ini


def runner_env(database_url: str, alembic_config: Path | None = None) -> dict[str, str]:
    """The inherited environment without any DB_*/MIGRATION_*/ALEMBIC_* setting, plus ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "MIGRATION_", "ALEMBIC_"))
    }
    env["DATABASE_URL"] = database_url
    env["MIGRATION_LOG_FORMAT"] = "json"
    if alembic_config is not None:
        env["ALEMBIC_CONFIG"] = str(alembic_config)
    return env


def with_bytecode(env: dict[str, str], cache_dir: Path | None) -> dict[str, str]:
    """Control Python's bytecode cache for child processes without touching the repository
    or the virtualenv: with ``cache_dir``, .pyc files are read and written there only
    (PYTHONPYCACHEPREFIX), so the second run of a command imports from bytecode; with
    ``None``, an empty prefix and PYTHONDONTWRITEBYTECODE=1, so every run compiles every
    imported module from source (what happens when the inherited environment sets
    PYTHONDONTWRITEBYTECODE and no .pyc files were installed)."""
    env = dict(env)
    if cache_dir is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "bench-no-pyc-never-written")
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[tuple[Cluster, str]]:
    """A started cluster on 127.0.0.1 with a random password; always destroyed."""
    password = "bench-" + secrets.token_urlsafe(12)
    cluster = Cluster.create(password=password)
    try:
        cluster.start()
        yield cluster, password
    finally:
        cluster.destroy()


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def connect(cluster: Cluster, password: str, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit superuser session over TCP to 127.0.0.1."""
    return psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user="postgres",
        password=password,
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
        application_name="bench",
    )


def create_database(cluster: Cluster, password: str, name: str) -> None:
    with connect(cluster, password) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def machine(cluster: Cluster, password: str) -> list[str]:
    """nproc, CPU model, OS, Python and PostgreSQL versions, for the report's header."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with connect(cluster, password) as conn:
        row = conn.execute("SELECT version()").fetchone()
        pg = row[0] if row else "?"
    return [
        f"nproc:      {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        f"CPU:        {cpu}",
        f"OS:         {platform.platform()}",
        f"Python:     {platform.python_version()} ({sys.executable})",
        f"PostgreSQL: {pg}",
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def describe(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "p90": percentile(values, 90),
        "max": max(values),
    }
