"""Throwaway Alembic projects, for the tests and the bench: alembic.ini, env.py and
revision files written by code (:class:`Project`), and the linear histories the verify tests
and ``bench/verify_time.py`` build revision by revision (:class:`History`)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from runner.scripts import load as scripts

ROOT = Path(__file__).resolve().parents[1]

ENV_PY = """
from alembic import context

config = context.config


def _migrate(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine, pool
    from runner.config.settings import load_settings

    engine = create_engine(load_settings().connection_spec().url(hide_password=False),
                           poolclass=pool.NullPool)
    with engine.connect() as own:
        _migrate(own)
else:
    _migrate(connection)
"""


def age_files(directory: Path, seconds: float) -> None:
    """Date every ``*.py`` file in ``directory`` ``seconds`` back (negative: forward), as
    files checked out long before a manifest was written (see runner/scripts/manifest.py)."""
    for path in directory.glob("*.py"):
        stamp = path.stat().st_mtime - seconds
        os.utime(path, (stamp, stamp))


class Project:
    """A throwaway Alembic project: alembic.ini, env.py and revision files written by tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "migrations" / "versions"
        self.versions.mkdir(parents=True)
        (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
        (root / "migrations" / "env.py").write_text(ENV_PY)
        (root / "migrations" / "script.py.mako").write_text(
            (ROOT / "alembic" / "script.py.mako").read_text()
        )

    @property
    def ini(self) -> Path:
        return self.root / "alembic.ini"

    def revision(self, rev: str, down: str | None, upgrade: str, downgrade: str = "pass") -> Path:
        """Write revision ``rev`` whose upgrade() body is ``upgrade`` (Python source)."""
        path = self.versions / f"{rev}_step.py"
        path.write_text(
            f'"""step {rev}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            f"depends_on = None\n\n\ndef upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
            f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
        )
        return path

    def audited_chain(self, revs: list[str]) -> None:
        """A linear history where every revision records itself in ``audit`` (once per apply)."""
        down = None
        for index, rev in enumerate(revs):
            create = (
                "op.execute('CREATE TABLE audit (rev text NOT NULL, at timestamptz DEFAULT now())')\n"
                if index == 0
                else ""
            )
            self.revision(
                rev, down, create + f"op.execute(\"INSERT INTO audit (rev) VALUES ('{rev}')\")"
            )
            down = rev


VERIFY_ENV_PY = """
import contextlib
import pathlib
import runpy
import sys
import types

from alembic import context

config = context.config
models = pathlib.Path(__file__).parent.parent / "models.py"
target_metadata = None
if models.exists():  # loaded once per version of the file, as an imported module would be
    key = f"models:{models}:{models.stat().st_mtime_ns}"
    if key not in sys.modules:
        sys.modules[key] = types.ModuleType(key)
        sys.modules[key].__dict__.update(runpy.run_path(str(models)))
    target_metadata = sys.modules[key].metadata
options = dict(target_metadata=target_metadata, transaction_per_migration=True, compare_type=True)

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:  # a Connection (the runner, verify), an Engine (pytest-alembic), or nothing (alembic)
    from sqlalchemy import create_engine, pool
    from sqlalchemy.engine import Connection

    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with contextlib.nullcontext(connectable) if isinstance(connectable, Connection) else connectable.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
"""


class History(Project):
    """A linear history written revision by revision: ``add(upgrade, downgrade)``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        (root / "migrations" / "env.py").write_text(VERIFY_ENV_PY)
        self.last: str | None = None
        self.count = 0

    def add(self, upgrade: str, downgrade: str = "pass", *, header: str = "") -> str:
        """Append a revision (``r01``, ``r02`` ...) after the last one; its id."""
        self.count += 1
        rev = f"r{self.count:02d}"
        path = self.revision(rev, self.last, upgrade, downgrade)
        if header:
            path.write_text(textwrap.dedent(header).strip() + "\n" + path.read_text())
        self.last = rev
        return rev

    def models(self, body: str) -> None:
        (self.root / "models.py").write_text(
            "import sqlalchemy as sa\n\nmetadata = sa.MetaData()\n" + textwrap.dedent(body)
        )

    def load(self) -> scripts.Loaded:
        return scripts.load(self.ini)
