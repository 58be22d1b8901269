"""Single promises the invariant harness (test_invariants.py) first found broken (issue 21),
each pinned with the exact behaviour now promised."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner.errors import ExitCode
from tests.support.helpers import run, runner_env


def test_history_shows_ledger_times_in_utc_whatever_the_servers_timezone(database, project):
    with database.admin() as admin:
        admin.execute(f"ALTER DATABASE \"{database.name}\" SET TimeZone = 'Asia/Tokyo'")
    project.revision("a1", None, "pass")
    assert run(runner_env(database, project)).code == 0
    result = run(runner_env(database, project), "history", "--json")
    result.check_log_contract()
    (row,) = json.loads(result.stdout)["revisions"]
    assert row["ledger"]["finished_at"].endswith("+00:00"), row
    (utc_hour,) = database.query(
        "SELECT to_char(max(finished_at) AT TIME ZONE 'UTC', 'HH24') FROM migration_runner_ledger"
    )[0]
    assert row["ledger"]["finished_at"][11:13] == utc_hour


def test_history_survives_a_ledger_row_without_an_end_time(database, project):
    project.revision("a1", None, "pass")
    assert run(runner_env(database, project)).code == 0
    with database.admin() as admin:
        admin.execute(
            "ALTER TABLE migration_runner_ledger ALTER COLUMN finished_at DROP NOT NULL; "
            "UPDATE migration_runner_ledger SET finished_at = NULL"
        )
    result = run(runner_env(database, project), "history")
    result.check_log_contract()
    assert result.code == 0 and "(no end time)" in result.stdout, result.stdout


def test_every_ledger_reader_survives_infinite_and_null_timestamps(database, project):
    # a user or a restore can put what timestamptz allows there: psycopg has no datetime for it
    project.revision("a1", None, "pass")
    project.revision("a2", "a1", "pass")
    assert run(runner_env(database, project), "upgrade", "a1").code == 0
    with database.admin() as admin:
        admin.execute(
            "ALTER TABLE migration_runner_ledger ALTER COLUMN started_at DROP NOT NULL; "
            "INSERT INTO migration_runner_ledger (revision, outcome, checksum, started_at, "
            "finished_at, duration_ms, runner_version, ran_on) VALUES "
            "('a1', 'stamped', NULL, '-infinity', 'infinity', 0, 'x', 'restore'), "
            "('a2', 'reverted', NULL, NULL, '-infinity', 0, 'x', 'restore')"
        )
    env = runner_env(database, project)
    for args in (("history",), ("history", "--json"), ("current", "--json")):
        result = run(env, *args)
        result.check_log_contract()
        assert result.code == 0, (args, result.stderr)
    result = run(env, "check")
    assert result.code == ExitCode.NOT_AT_HEAD == result.summary["exit_code"], result.stderr
    assert "Traceback" not in result.stderr and result.events[-1]["event"] == "summary"
    text = run(env, "history").stdout
    assert "stamped infinity on restore" in text and "reverted -infinity on restore" in text
    rows = json.loads(run(env, "history", "--json").stdout)["revisions"]
    assert [(r["ledger"]["started_at"], r["ledger"]["finished_at"]) for r in rows] == [
        ("-infinity", "infinity"),
        (None, "-infinity"),
    ]
    result = run(env, "upgrade")
    result.check_log_contract()
    assert result.code == 0 and result.summary["applied"] == ["a2"], result.stdout


def test_history_escapes_control_characters_in_messages(database, project):
    path = project.revision("a1", None, "pass")
    path.write_text(
        path.read_text().replace('"""step a1"""', '"""evil \x1b]0;pwned\x07 \x1b[2J"""')
    )
    result = run(runner_env(database, project), "history")
    result.check_log_contract()
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;pwned\\x07" in result.stdout


def test_an_env_py_that_does_not_compile_is_invalid_scripts_before_connecting(database, project):
    project.revision("a1", None, "pass")
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(env_py.read_text() + "\ndef broken(:\n")
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.SCRIPTS_INVALID, result.stdout
    assert "env.py" in result.event("error")["message"]
    assert database.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_a_manifest_into_a_missing_directory_is_a_config_error(project, tmp_path):
    project.revision("a1", None, "pass")
    target = tmp_path / "missing" / "manifest.json"
    result = run(runner_env(None, project, MIGRATION_MANIFEST=target), "manifest")
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stderr
    assert str(target) in result.event("error")["message"]


PARTIAL = """
op.add_column("items", sa.Column("code", sa.Text))
op.execute("UPDATE items SET code = 'same'")
with op.get_context().autocommit_block():
    op.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_items_code ON items (code)")
"""


def test_a_failed_autocommit_block_says_exactly_what_stays_and_the_recovery_works(
    database, project
):
    """Found by issue 21: reported "rolled back" while the column stayed and an INVALID index
    was left; every rerun then failed on the duplicate column."""
    project.revision(
        "a1",
        None,
        "op.execute('CREATE TABLE items (id int)')\n"
        "op.execute('INSERT INTO items VALUES (1), (2)')",
    )
    project.revision("a2", "a1", PARTIAL)
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    error = result.event("error")
    assert "NOT fully rolled back" in error["message"] and "was rolled back" not in error["message"]
    assert [s.split()[:3] for s in error["committed_statements"]] == [
        ["ALTER", "TABLE", "items"],
        ["UPDATE", "items", "SET"],
    ]
    assert error["left_behind"] == ["INVALID index ix_items_code"], error
    assert database.version() == ["a1"]
    # the documented recovery: undo what stays, then run again
    with database.connect() as conn:
        conn.execute("DROP INDEX ix_items_code")
        conn.execute("ALTER TABLE items DROP COLUMN code")
    project.revision("a2", "a1", PARTIAL.replace("'same'", "id::text"))
    again = run(runner_env(database, project))
    again.check_log_contract()
    assert again.code == 0 and database.version() == ["a2"], again.stdout


def test_a_revision_never_commits_on_a_session_without_the_lock(database, project):
    """Issue 21, promise 10: each revision's transaction checks before its COMMIT that its own
    server session holds the migration lock (through a transaction-mode pooler it may not);
    here the revision gives the lock up itself, the deterministic stand-in for a pooler."""
    project.revision("a1", None, "op.execute('CREATE TABLE t1 (id int)')")
    project.revision(
        "a2",
        "a1",
        "op.execute('CREATE TABLE t2 (id int)')\nop.execute('SELECT pg_advisory_unlock_all()')",
    )
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stdout
    error = result.event("error")
    assert error["pooler"] == "transaction" and "rolled back before its COMMIT" in error["message"]
    assert database.version() == ["a1"] and not database.table_exists("t2")
    assert result.summary["applied"] == ["a1"]


def _vault_the_role_cannot_use(database) -> None:
    """A schema holding the version table at a1, owned by the superuser, no USAGE granted."""
    with database.admin() as admin:
        if admin.info.user == database.server.user:
            pytest.skip("the tests connect as the superuser: every schema is usable")
        admin.execute(
            "CREATE SCHEMA vault; REVOKE ALL ON SCHEMA vault FROM PUBLIC; "
            "CREATE TABLE vault.alembic_version (version_num varchar(32) PRIMARY KEY); "
            "INSERT INTO vault.alembic_version VALUES ('a1')"
        )


@pytest.mark.parametrize("where", ["setting", "search_path"])
@pytest.mark.parametrize("verb", ["current", "check", "history", "upgrade"])
def test_a_version_table_schema_without_usage_is_permission_denied_never_empty(
    database, project, verb, where
):
    project.revision("a1", None, "pass")
    _vault_the_role_cannot_use(database)
    if where == "setting":
        env = runner_env(database, project, MIGRATION_VERSION_TABLE_SCHEMA="vault")
    else:
        with database.admin() as admin:
            admin.execute(f'ALTER DATABASE "{database.name}" SET search_path = vault, public')
        env = runner_env(database, project)
    result = run(env, verb)
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.log
    message = result.event("error")["message"]
    assert "USAGE" in message and "GRANT USAGE ON SCHEMA vault TO app_owner" in message, message
    assert "does not exist" not in message, message
    assert result.summary["outcome"] != "empty"
    assert database.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@pytest.mark.parametrize("own_engine", [False, True], ids=["runners-connection", "own-engine"])
def test_an_env_py_that_discards_its_connection_after_migrating_reports_the_revisions_applied(
    database, project, own_engine
):
    project.revision("a1", None, 'op.execute("CREATE TABLE t1 (id int)")')
    project.revision("a2", "a1", 'op.execute("CREATE TABLE t2 (id int)")')
    env_py = project.root / "migrations" / "env.py"
    text = env_py.read_text().replace(
        "        context.run_migrations()\n",
        "        context.run_migrations()\n    connection.invalidate()\n",
    )
    if own_engine:
        text = text.replace('connection = config.attributes.get("connection")', "connection = None")
    env_py.write_text(text)
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert database.version() == ["a2"]
    assert result.code == 0, result.stdout
    assert result.summary["applied"] == ["a1", "a2"] and result.summary["to_revision"] == ["a2"]
    discarded = [e for e in result.events if e["event"] == "migrate.connection_discarded"]
    if own_engine:  # its own session, not the locked one: nothing the runner needed was lost
        assert discarded == [], discarded
    else:
        (warning,) = discarded
        assert warning["level"] == "warning" and warning["applied"] == ["a1", "a2"], warning
        assert "invalidate()" in warning["message"] and result.event("lock.released")
    assert database.advisory_locks() == 0


def _versions_with_spaces(project) -> tuple[Path, Path]:
    """Revision a1 in ``migrations/my versions``, a2 in ``migrations/more versions``."""
    first, second = (
        project.root / "migrations" / "my versions",
        project.root / "migrations" / "more versions",
    )
    project.revision("a1", None, 'op.execute("CREATE TABLE t1 (id int)")').rename(
        first.mkdir() or first / "a1_step.py"
    )
    project.revision("a2", "a1", 'op.execute("CREATE TABLE t2 (id int)")').rename(
        second.mkdir() or second / "a2_step.py"
    )
    return first, second


@pytest.mark.parametrize("form", ["declared-path_separator", "one-per-line"])
def test_version_locations_with_spaces_are_read_by_a_documented_separator(database, project, form):
    first, second = _versions_with_spaces(project)
    if form == "declared-path_separator":
        project.ini.write_text(project.ini.read_text() + "path_separator = os\n")
        value = f"{first}{os.pathsep}{second}"
    else:
        value = f"{first}\n{second}\n"
    result = run(runner_env(database, project, MIGRATION_VERSION_LOCATIONS=value))
    result.check_log_contract()
    assert result.code == 0 and result.summary["applied"] == ["a1", "a2"], result.stdout


def test_a_wrong_version_location_blames_the_setting_not_alembic_config(database, project):
    first, second = _versions_with_spaces(project)
    result = run(
        runner_env(database, project, MIGRATION_VERSION_LOCATIONS=f"{first}, {second}"), "current"
    )
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stderr
    message = result.event("error")["message"]
    assert message.startswith("MIGRATION_VERSION_LOCATIONS"), message
    assert "ALEMBIC_CONFIG" not in message and "path_separator" in message, message
