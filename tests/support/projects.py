"""Projects nobody here wrote: generated at test time by the Alembic we ship (`alembic init -t
TEMPLATE`, `alembic revision`), the URL written where the template reads it; plus URLs for
each driver, plain Alembic as the reference, and a normalized schema dump to compare with."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from devtools.pgcluster import find_bindir
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


def generate(root: Path, *args: str) -> None:
    """Alembic's command line in this process (for ``init`` and ``revision``, which only write
    files: a process each would cost seconds on a busy machine), in the project directory."""
    from alembic.config import CommandLine

    with contextlib.chdir(root), contextlib.redirect_stdout(io.StringIO()):
        CommandLine(prog="alembic").main(list(args))


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


class GeneratedProject:
    """An `alembic init -t TEMPLATE` project; revisions are added with `alembic revision`."""

    def __init__(self, root: Path, template: str, url: str) -> None:
        self.root, self.template = root, template
        root.mkdir(parents=True)
        generate(root, "init", "-t", template, "migrations")
        self.set_url(url)

    @property
    def ini(self) -> Path:
        return self.root / "alembic.ini"

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    @property
    def env_py(self) -> Path:
        return self.root / "migrations" / "env.py"

    def set_option(self, name: str, value: str) -> None:
        """``name = value`` in alembic.ini's [alembic] section (replaced, or added)."""
        text = self.ini.read_text()
        found = re.search(rf"^{re.escape(name)} = .*$", text, re.MULTILINE)
        line = f"{name} = {value}"
        text = (
            text.replace(found.group(0), line)
            if found
            else text.replace("[alembic]\n", f"[alembic]\n{line}\n", 1)
        )
        self.ini.write_text(text)

    def set_url(self, url: str) -> None:
        """``sqlalchemy.url`` in alembic.ini, where every template reads it (escaped: the ini
        interpolates ``%``)."""
        text = self.ini.read_text()
        current = re.search(r"^sqlalchemy\.url = .*$", text, re.MULTILINE)
        assert current, f"no sqlalchemy.url in {self.ini}"
        self.ini.write_text(
            text.replace(current.group(0), "sqlalchemy.url = " + url.replace("%", "%%"))
        )

    def revision(self, rev: str, message: str, upgrade: str, *options: str) -> Path:
        """`alembic revision --rev-id REV -m MESSAGE [OPTIONS]`, then ``upgrade`` as its
        upgrade() body (``options``: e.g. ``--head``, ``--branch-label``, ``--version-path``)."""
        generate(self.root, "revision", "--rev-id", rev, "-m", message, *options)
        (path,) = [
            found for found in self.root.rglob(f"{rev}_*.py") if "__pycache__" not in found.parts
        ]
        text = path.read_text()
        stub = re.search(r'(def upgrade\(\)[^:]*:\n    """Upgrade schema."""\n)    pass\n', text)
        assert stub, f"unexpected revision template in {path}"
        body = textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")
        path.write_text(text.replace(stub.group(0), f"{stub.group(1)}{body}\n", 1))
        return path

    def audited_revisions(self) -> list[str]:
        """Three revisions that build a small schema; each records itself in ``audit``."""
        self.revision(
            "a1",
            "create items",
            """
            op.create_table("audit", sa.Column("rev", sa.Text, nullable=False))
            op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("name", sa.Text, nullable=False),
                            sa.Column("created_at", sa.DateTime(timezone=True),
                                      server_default=sa.func.now()))
            op.create_index("ix_items_name", "items", ["name"])
            op.execute("INSERT INTO audit (rev) VALUES ('a1')")
        """,
        )
        self.revision(
            "a2",
            "items get a quantity",
            """
            op.add_column("items", sa.Column("qty", sa.Integer, nullable=False, server_default="0"))
            items = sa.table("items", sa.column("name", sa.Text), sa.column("qty", sa.Integer))
            op.bulk_insert(items, [{"name": "bolt", "qty": 3}, {"name": "nut", "qty": 5}])
            op.execute("INSERT INTO audit (rev) VALUES ('a2')")
        """,
        )
        self.revision(
            "a3",
            "a view and a check",
            """
            op.create_check_constraint("ck_items_qty", "items", "qty >= 0")
            op.execute("CREATE VIEW stocked AS SELECT name, qty FROM items WHERE qty > 0")
            op.execute("INSERT INTO audit (rev) VALUES ('a3')")
        """,
        )
        return ["a1", "a2", "a3"]


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
