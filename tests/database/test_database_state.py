"""Where the database stands before the runner touches it."""

from __future__ import annotations

from runner.errors import ExitCode
from tests.support.helpers import run, runner_env


def _stamp(database, revision: str) -> None:
    with database.connect() as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))


def test_database_ahead_of_the_code_is_refused(database, project):
    project.audited_chain(["a1"])
    _stamp(database, "f00dfeed")
    result = run(runner_env(database, project))

    assert result.code == ExitCode.DATABASE_AHEAD
    assert "f00dfeed" in result.event("error")["message"]
    assert database.version() == ["f00dfeed"]
    assert not database.table_exists("audit")
    result.assert_clean()


def test_database_ahead_is_accepted_with_a_warning_when_configured(database, project):
    project.audited_chain(["a1"])
    _stamp(database, "f00dfeed")
    result = run(runner_env(database, project, MIGRATION_ALLOW_DATABASE_AHEAD="true"))

    assert result.code == 0
    assert result.event("upgrade.database_ahead")["level"] == "warning"
    assert result.summary["outcome"] == "database_ahead"
    assert database.version() == ["f00dfeed"]
    assert not database.table_exists("audit")


def test_partly_migrated_database_resumes_where_it_stopped(database, project):
    project.audited_chain(["a1", "a2", "a3"])
    assert run(runner_env(database, project), "upgrade", "a1").code == 0
    result = run(runner_env(database, project))
    assert result.summary["from_revision"] == ["a1"]
    assert result.summary["applied"] == ["a2", "a3"]
