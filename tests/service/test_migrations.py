"""The service's own migrations (alembic/, src/db/): applied by the runner, matching the models,
and still usable with plain Alembic through env.py's fallback."""

from __future__ import annotations

import subprocess
import sys

from tests.support.helpers import ROOT, run, runner_env


def test_runner_applies_the_calls_table(database):
    result = run(runner_env(database), "upgrade")
    assert result.code == 0, result.stdout
    assert database.version() == ["ba8c60a76780"]
    columns = [
        c
        for (c,) in database.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'calls' ORDER BY ordinal_position"
        )
    ]
    assert columns == [
        "id",
        "user_id",
        "phone_number",
        "is_active",
        "started_at",
        "ended_at",
        "created_at",
        "updated_at",
    ]
    assert database.query(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_user_active'"
    ) == [("CREATE INDEX idx_user_active ON public.calls USING btree (user_id, is_active)",)]


def test_models_and_migrations_agree_autogenerate_finds_nothing(database):
    assert run(runner_env(database), "upgrade").code == 0
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=ROOT,
        env=runner_env(database),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_autogenerate_check_notices_a_model_the_migrations_lack(database, tmp_path):
    """The agreement test above can fail: a database without the migration differs from the models."""
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=ROOT,
        env=runner_env(database),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0


def test_plain_alembic_still_works_for_developers(database):
    env = runner_env(database)
    up = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    assert database.version() == ["ba8c60a76780"]
    down = subprocess.run(
        [sys.executable, "-m", "alembic", "downgrade", "base"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 0, down.stderr
    assert not database.table_exists("calls")


def test_runner_package_never_imports_the_service_models():
    for path in (ROOT / "runner").glob("*.py"):
        assert "src.db" not in path.read_text(), path
