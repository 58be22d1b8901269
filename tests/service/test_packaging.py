"""The service and the runner stay apart: the service's web stack is never a dependency of the
runner (nor in its image), the runner's side (env.py, the models) imports without it, and
neither package imports the other."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.support.helpers import ROOT

# greenlet is not here: sqlalchemy[asyncio] is the runner's own dependency, for projects whose
# env.py is async (Alembic's async templates, issue 9)
SERVICE_STACK = ("fastapi", "starlette", "uvicorn", "httpx")


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_the_runners_dependencies_exclude_the_service_stack():
    # what `uv sync --no-dev` (the image) installs, read from the lock file
    proc = subprocess.run(
        ["uv", "export", "--locked", "--no-dev", "--no-hashes", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    names = {
        re.split(r"[=<>\[ ;]", line, maxsplit=1)[0].lower()
        for line in proc.stdout.splitlines()
        if line and not line.startswith(("#", " ", "-"))
    }
    assert {"alembic", "sqlalchemy", "psycopg"} <= names
    assert names.isdisjoint(SERVICE_STACK), names & set(SERVICE_STACK)


def test_the_migrations_load_the_models_without_the_service_stack():
    blocked = ", ".join(repr(m) for m in SERVICE_STACK)
    script = (
        f"import sys\nfor m in ({blocked}):\n    sys.modules[m] = None\n"
        "from src.db.calls import Call, CallRepository\n"
        "from runner.cli.main import main\nsys.exit(main(['sql']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CREATE TABLE calls" in proc.stdout


def test_the_service_never_imports_the_runner():
    offenders = [
        path
        for path in (ROOT / "src").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+runner\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
