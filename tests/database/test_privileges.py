"""What the runner can and cannot see as an RDS-like role (see tests/conftest.py).

The application's sessions belong to another role than the runner's. Without
``pg_read_all_stats`` PostgreSQL hides such a session's query, state and address: the runner
still names it (pid, application_name, user) and says what it cannot see and why, instead of
showing PostgreSQL's ``<insufficient privilege>`` or failing.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from runner.errors import ExitCode
from runner.lock.advisory import lock_key
from tests.support.helpers import Database, run, runner_env

HIDDEN = "hidden: needs pg_read_all_stats"
ROLES = [
    pytest.param(True, id="with-pg_read_all_stats"),
    pytest.param(False, id="no-grants", marks=pytest.mark.no_grants),
]


def other_role_session(database: Database, name: str) -> psycopg.Connection:
    """A session of another role (the superuser's, standing in for the application's)."""
    conn = psycopg.connect(
        database.server.admin_conninfo, dbname=database.name, application_name=name, autocommit=True
    )
    if conn.info.user == database.server.user:
        conn.close()
        pytest.skip("the tests connect as the superuser: no session of another role to hide")
    return conn


@pytest.mark.parametrize("sees_all", ROLES)
def test_a_blocker_of_another_role_is_named_and_its_query_shown_only_with_the_grant(
    database, project, sees_all
):
    with database.connect() as conn:
        conn.execute("CREATE TABLE accounts (id int)")
    project.revision("r1", None, 'op.execute("ALTER TABLE accounts ADD COLUMN note text")')
    with other_role_session(database, "app-report") as blocker:
        blocker.execute("BEGIN")
        blocker.execute("SELECT count(*) FROM accounts")
        blocker_pid = blocker.info.backend_pid
        result = run(
            runner_env(
                database, project, MIGRATION_DDL_LOCK_TIMEOUT=0.3, MIGRATION_DDL_LOCK_RETRIES=1
            )
        )

    assert result.code == ExitCode.MIGRATION_BLOCKED, result.stdout
    (blocked,) = [e for e in result.events if e["event"] == "revision.blocked"]
    (named,) = blocked["blockers"]
    assert (named["pid"], named["application_name"]) == (blocker_pid, "app-report")
    if sees_all:
        assert named["query"] == "SELECT count(*) FROM accounts"
        assert named["state"] == "idle in transaction"
    else:
        assert (named["query"], named["state"], named["transaction_open_s"]) == (HIDDEN, None, None)
    error = result.event("error")
    assert f"pid {named['pid']} (app-report" in error["message"], error["message"]
    result.assert_clean()


@pytest.mark.parametrize("sees_all", ROLES)
def test_a_lock_holder_of_another_role_is_named_and_its_query_shown_only_with_the_grant(
    database, project, sees_all
):
    project.audited_chain(["a1"])
    with other_role_session(database, "held-by-dba") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("alembic:public.alembic_version"),))
        holder_pid = holder.info.backend_pid
        result = run(runner_env(database, project, MIGRATION_LOCK_WAIT_TIMEOUT=1))

    assert result.code == ExitCode.LOCK_TIMEOUT, result.stdout
    error = result.event("error")
    (named,) = error["holders"]
    assert (named["pid"], named["application_name"], named["user"]) == (
        holder_pid,
        "held-by-dba",
        "postgres",
    )
    assert named["query"] == ("SELECT pg_advisory_lock($1)" if sees_all else HIDDEN)
    assert f"pid {named['pid']} (held-by-dba" in error["message"], error["message"]
    assert database.version() == []
    result.assert_clean()


def test_a_role_that_may_not_create_in_public_is_told_which_grant_it_lacks(database, project):
    project.audited_chain(["a1"])
    with psycopg.connect(database.server.admin_conninfo, autocommit=True) as admin:
        if admin.info.user == database.server.user:
            pytest.skip("the tests connect as the superuser")
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(database.name))
        )
    result = run(runner_env(database, project))

    assert result.code == ExitCode.CONFIG, result.stdout
    error = result.event("error")
    assert error["error_code"] == "config"
    assert "may not create the runner's audit ledger" in error["message"]
    assert "GRANT CREATE ON SCHEMA public" in error["message"], error["message"]
    assert database.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    result.assert_clean()
