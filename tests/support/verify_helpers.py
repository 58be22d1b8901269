"""A throwaway Alembic project for the verify and lint tests: env.py runs online on the
connection it is given or offline (lint renders SQL), and compares with ``models.py`` when the
test writes one (``metadata = ...``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from runner.scripts import load as scripts
from tests.support.helpers import Project

ENV_PY = """
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
else:
    connection = config.attributes["connection"]
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()
"""


class History(Project):
    """A linear history written revision by revision: ``add(upgrade, downgrade)``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        (root / "migrations" / "env.py").write_text(ENV_PY)
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
