"""Projects nobody here wrote: generated at test time by the Alembic we ship (`alembic init -t
TEMPLATE`, `alembic revision`), the URL written where the template reads it; plus URLs for
each driver, plain Alembic as the reference, and a normalized schema dump to compare with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.pgcluster import find_bindir
from devtools.projects import GeneratedProject, generate  # noqa: F401 (the tests import them here)
from tests.support.helpers import Database, runner_env

#: Alembic's single-database templates (`alembic list_templates`, less `multidb`)
SINGLE_DATABASE_TEMPLATES = ("generic", "async", "pyproject", "pyproject_async")

#: SQLAlchemy URL scheme per driver the runner supports
SCHEMES = {
    "psycopg": "postgresql+psycopg",
    "psycopg2": "postgresql+psycopg2",
    "asyncpg": "postgresql+asyncpg",
    "psycopg_async": "postgresql+psycopg_async",
}

STOCK_URL = "driver://user:pass@localhost/dbname"


def driver_url(db: Database, driver: str, name: str | None = None) -> str:
    return db.url(name=name).replace("postgresql+psycopg://", SCHEMES[driver] + "://", 1)


def alembic(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain Alembic's command line, run in the project directory as a developer would."""
    env = runner_env(None)
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"alembic {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def schema(db: Database, exclude: tuple[str, ...] = ("migration_runner_ledger*",)) -> str:
    """``pg_dump --schema-only`` of ``db``, without comments, settings and pg_dump's random
    ``\\restrict`` keys, and without the runner's own tables: comparable across databases."""
    server = db.server
    args = [
        str(find_bindir() / "pg_dump"),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        server.user,
        "-d",
        db.name,
    ]
    for table in exclude:
        args += ["--exclude-table", table]
    proc = subprocess.run(
        args,
        env={**os.environ, "PGPASSWORD": server.password},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    keep = [
        line
        for line in proc.stdout.splitlines()
        if line.strip()
        and not line.startswith(
            ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
        )
    ]
    return "\n".join(keep)


def audit(db: Database) -> list[str]:
    return sorted(rev for (rev,) in db.query("SELECT rev FROM audit"))


# env.py as Alembic's cookbook writes it for a shared connection ("Sharing a Connection
# across one or more programmatic migration commands"), sync or async by the URL's driver.
SHARED_CONNECTION_ENV = """
import asyncio

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config


def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    engine = async_engine_from_config(config.get_section(config.config_ini_section, {}),
                                      prefix="sqlalchemy.", poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    do_run_migrations(connection)
elif make_url(config.get_main_option("sqlalchemy.url")).get_dialect().is_async:
    asyncio.run(run_async_migrations())
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as own:
        do_run_migrations(own)
"""
