"""The pytest plugin, in a team's own test run (pytest as a process, in the project's
directory): verify's checks as tests with verify's messages, the ``migration_runner``
fixture for tests of one revision's data, and nothing at all unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.helpers import run, runner_env
from tests.support.verify_helpers import History

CALLS = (
    'op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True), '
    'sa.Column("phone", sa.Text, nullable=False))'
)
BACKFILL_TEST = """
def test_the_backfill_fills_only_the_rows_without_a_region(migration_runner):
    migration_runner.upgrade("r02")
    migration_runner.insert("calls", [{"phone": "1"}, {"phone": "2", "region": "us"}])
    migration_runner.upgrade("r03")
    assert migration_runner.current() == ("r03",)
    assert migration_runner.query("SELECT phone, region FROM calls ORDER BY phone") == [
        ("1", "eu"),
        ("2", "us"),
    ]
"""


@pytest.fixture
def history(tmp_path: Path) -> History:
    history = History(tmp_path / "project")
    history.add(CALLS, 'op.drop_table("calls")')
    return history


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in the project's directory, as the team's CI would run it (this environment
    has migration-runner installed, so the plugin is loaded by its entry point)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    if not (project / "pytest.ini").exists():
        (project / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_verify_checks_are_tests_with_verify_s_own_messages(history, database):
    history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')  # no drop_index
    proc = _pytest(
        history.root, "--verify-migrations", "--migration-runner-database-url", database.url()
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # the CLI, on a server of its own, from the same directory: the same lines
    cli = run(runner_env(database, history), "verify", timeout=120, cwd=history.root)
    [fail_line] = [line for line in cli.stdout.splitlines() if line.startswith("FAIL [steps]")][:1]
    assert fail_line in proc.stdout
    outcomes = {
        line.split(" ", 1)[1].split(" - ")[0]: line.split()[0]
        for line in proc.stdout.splitlines()
        if line.startswith(("PASSED ", "FAILED ")) and "migration-runner verify::" in line
    }
    assert outcomes == {
        "migration-runner verify::heads": "PASSED",
        "migration-runner verify::steps": "FAILED",
        "migration-runner verify::data": "PASSED",
        "migration-runner verify::models": "FAILED",
        "migration-runner verify::lint": "PASSED",
    }, proc.stdout
    assert "the walk stopped at r02: the database is not at head" in proc.stdout


def test_the_fixture_tests_a_backfill_on_rows_put_in_before_it(history, database):
    history.add(
        'op.add_column("calls", sa.Column("region", sa.Text, nullable=True))',
        'op.drop_column("calls", "region")',
    )
    history.add("op.execute(\"UPDATE calls SET region = 'eu' WHERE region IS NULL\")")
    (history.root / "test_backfill.py").write_text(textwrap.dedent(BACKFILL_TEST))
    url = ("--migration-runner-database-url", database.url())
    passed = _pytest(history.root, *url)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed" in passed.stdout
    # the same test catches a backfill that overwrites every row
    (history.versions / "r03_step.py").write_text(
        (history.versions / "r03_step.py").read_text().replace(" WHERE region IS NULL", "")
    )
    failed = _pytest(history.root, *url)
    assert failed.returncode == 1 and "('2', 'eu')" in failed.stdout, failed.stdout


def test_without_a_database_url_the_session_starts_its_own_postgresql(history):
    (history.root / "test_one.py").write_text(
        "def test_upgrade(migration_runner):\n"
        "    migration_runner.upgrade()\n"
        "    assert migration_runner.query('SELECT count(*) FROM calls') == [(0,)]\n"
    )
    proc = _pytest(history.root, "--verify-migrations", "-k", "upgrade or steps")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_the_plugin_adds_nothing_unless_asked(history):
    (history.root / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    proc = _pytest(history.root)
    assert proc.returncode == 0 and "1 passed" in proc.stdout
    assert "migration-runner verify" not in proc.stdout


def test_loading_the_plugin_imports_neither_alembic_sqlalchemy_nor_a_driver():
    heavy = ("alembic", "sqlalchemy", "psycopg", "runner.checklist.verify")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runner.checklist.pytest_plugin\n"
            f"print([m for m in {heavy!r} if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_a_database_url_that_cannot_be_reached_fails_each_check_without_its_password(history):
    """psycopg's error carried the conninfo, password included, into pytest's traceback."""
    (history.root / "test_data.py").write_text(
        "def test_upgrade(migration_runner):\n    migration_runner.upgrade('heads')\n"
    )
    secret = "Pw-never-shown-42"
    url = f"postgresql://postgres:{secret}@127.0.0.1:1/nowhere"
    proc = _pytest(history.root, "--verify-migrations", "--migration-runner-database-url", url)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert secret not in output
    assert "cannot create a scratch database on postgresql+psycopg://postgres:***@" in output
    assert "password=" not in output, output  # psycopg's conninfo
    checks = [line for line in output.splitlines() if line.startswith("FAILED migration-runner")]
    assert len(checks) == 4 and all("cannot create a scratch database" in c for c in checks)
