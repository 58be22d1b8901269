"""An env.py that migrates somewhere else than where the runner holds its lock is refused
before any revision runs, naming both databases."""

from __future__ import annotations

import pytest

from runner.errors import ExitCode
from tests.support.helpers import Database, new_database, run, runner_env

# Reads its own variable, as some projects do, ignoring both the connection and sqlalchemy.url.
OWN_SETTINGS_ENV = """
import os
from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["APP_DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.fixture
def other(database: Database):
    with new_database(database.server) as db:
        yield db


def test_env_py_migrating_another_database_is_refused_naming_both(database, other, project):
    (project.root / "migrations" / "env.py").write_text(OWN_SETTINGS_ENV)
    project.audited_chain(["s1", "s2"])
    result = run(runner_env(database, project, APP_DATABASE_URL=other.url()))

    assert result.code == ExitCode.CONFIG, result.stdout + result.stderr
    message = result.event("error")["message"]
    assert database.name in message and other.name in message
    assert not other.table_exists("audit") and not other.table_exists("alembic_version")
    assert not database.table_exists("audit") and database.version() == []
    assert not [e for e in result.events if e["event"] == "revision.started"]
    result.assert_clean()


def test_env_py_with_its_own_settings_for_the_same_database_migrates(database, project):
    (project.root / "migrations" / "env.py").write_text(OWN_SETTINGS_ENV)
    project.audited_chain(["s1", "s2"])
    result = run(runner_env(database, project, APP_DATABASE_URL=database.url()))

    assert result.code == 0, result.stdout + result.stderr
    assert result.event("migrate.mode")["mode"] == "separate_connection"
    assert database.version() == ["s2"]
    result.assert_clean()


# --- the decision, as a pure function --------------------------------------------------------

from runner.lock.same_database import SessionLocation, mismatch  # noqa: E402

HERE = SessionLocation("app", "10.0.0.5", 5432, "7312")


@pytest.mark.parametrize(
    "migrating,sees_the_lock,same",
    [
        (HERE, True, True),
        (
            SessionLocation("app", None, None, None),
            True,
            True,
        ),  # a unix socket, no pg_control_system()
        (
            SessionLocation("app", "10.0.0.6", 5432, "7312"),
            True,
            True,
        ),  # another address of the server
        (SessionLocation("other", "10.0.0.5", 5432, "7312"), False, False),
        (
            SessionLocation("app", "10.0.0.9", 5432, "9999"),
            False,
            False,
        ),  # a same-named database elsewhere
        (
            SessionLocation("app", "10.0.0.9", 5432, "9999"),
            True,
            False,
        ),  # systems differ: never the same
        (SessionLocation("app", "10.0.0.5", 5432, None), False, False),
    ],
)
def test_the_visible_lock_and_the_system_identifier_decide(migrating, sees_the_lock, same):
    problem = mismatch(HERE, migrating, sees_the_lock)
    assert (problem is None) == same
    if problem:
        assert "'app' on 10.0.0.5:5432, system 7312" in problem and migrating.describe() in problem
