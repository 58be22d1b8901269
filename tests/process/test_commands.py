"""The operator commands, against real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess

import psycopg
import pytest

from devtools.pgcluster import find_bindir
from runner.errors import ExitCode
from tests.support.helpers import ROOT, Running, run, runner_env


def _json(result) -> dict:
    return json.loads(result.stdout)


@pytest.fixture
def chain(project):
    project.audited_chain(["a1", "a2", "a3"])
    return project


def test_check_tells_empty_behind_at_head_and_ahead_apart(database, chain):
    env = runner_env(database, chain)
    empty = run(env, "check", "--json")
    assert (empty.code, _json(empty)["status"], _json(empty)["pending"]) == (
        ExitCode.NOT_AT_HEAD,
        "empty",
        ["a1", "a2", "a3"],
    )

    assert run(env, "upgrade", "a1").code == 0
    behind = run(env, "check", "--json")
    assert (behind.code, _json(behind)["status"], _json(behind)["pending"]) == (
        ExitCode.NOT_AT_HEAD,
        "behind",
        ["a2", "a3"],
    )

    assert run(env).code == 0
    at_head = run(env, "check", "--json")
    assert (at_head.code, _json(at_head)["status"], _json(at_head)["at_head"]) == (
        0,
        "at_head",
        True,
    )

    with database.connect() as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    ahead = run(env, "check", "--json")
    assert (ahead.code, _json(ahead)["status"]) == (ExitCode.DATABASE_AHEAD, "ahead")
    for result in (empty, behind, at_head, ahead):
        assert json.loads(result.stderr.splitlines()[-1])["event"] == "summary"  # logs on stderr
        result.assert_clean()


def test_current_in_text_and_json(database, chain):
    env = runner_env(database, chain)
    run(env, "upgrade", "a2")
    text = run(env, "current")
    assert text.code == 0 and text.stdout.splitlines()[0] == "a2"
    assert "1 pending: a3" in text.stdout
    doc = _json(run(env, "current", "--json"))
    assert doc["revision"] == ["a2"] and doc["heads"] == ["a3"] and doc["at_head"] is False


def test_history_marks_what_is_applied(database, chain):
    env = runner_env(database, chain)
    run(env, "upgrade", "a2")
    doc = _json(run(env, "history", "--json"))
    assert [(r["revision"], r["applied"], r["current"], r["head"]) for r in doc["revisions"]] == [
        ("a1", True, False, False),
        ("a2", True, True, False),
        ("a3", False, False, True),
    ]
    text = run(env, "history").stdout.splitlines()
    assert text[1].startswith("● a1") and text[2].startswith("● a2") and text[3].startswith("○ a3")
    assert "current" in text[2] and "pending, head" in text[3]


def test_heads_reports_several_heads_as_an_error(database, chain):
    env = runner_env(database, chain)
    assert _json(run(env, "heads", "--json"))["heads"][0]["revision"] == "a3"
    chain.revision("b3", "a2", "pass")
    several = run(env, "heads", "--json")
    assert several.code == ExitCode.SCRIPTS_INVALID
    assert {h["revision"] for h in _json(several)["heads"]} == {"a3", "b3"}


def test_merge_joins_the_heads(database, chain):
    chain.revision("b3", "a2", "pass")
    env = runner_env(database, chain)
    merged = run(env, "merge", "-m", "merge a3 and b3")
    assert merged.code == 0, merged.stderr
    assert len(_json(run(env, "heads", "--json"))["heads"]) == 1
    assert run(env).code == 0


def test_downgrade_needs_an_explicit_target_and_steps_back_under_the_lock(database, chain):
    env = runner_env(database, chain)
    assert run(env).code == 0
    assert run(env, "downgrade").code == 2  # argparse: the target is required
    down = run(env, "downgrade", "-1")
    assert down.code == 0, down.stdout
    assert down.summary["outcome"] == "downgraded" and down.summary["applied"] == ["a3"]
    assert [e["event"] for e in down.events if e["event"].startswith("lock.")] == [
        "lock.acquired",
        "lock.released",
    ]
    assert database.version() == ["a2"]
    assert run(env, "downgrade", "base").code == 0
    assert database.version() == []


def test_downgrade_waits_for_a_running_upgrade(database, project):
    project.audited_chain(["a1"])
    project.revision(
        "a2", "a1", "op.execute('SELECT pg_advisory_xact_lock(4242)')  # the test's gate"
    )
    env = runner_env(database, project, MIGRATION_DDL_LOCK_TIMEOUT=0)
    with database.connect() as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")
        upgrading = Running(env)
        upgrading.wait_for_event("revision.started")
        downgrading = Running(env, "downgrade", "-1")
        downgrading.wait_for_event("lock.waiting")
        gate.execute("SELECT pg_advisory_unlock(4242)")
        up, down = upgrading.finish(), downgrading.finish()

    assert (up.code, down.code) == (0, 0), down.stdout
    assert up.summary["applied"] == ["a1", "a2"]
    assert down.summary["lock_wait_ms"] > 0
    assert down.summary["from_revision"] == ["a2"]  # it saw the upgrade's result, not a half state
    assert down.summary["applied"] == ["a2"]
    assert database.version() == ["a1"]


def test_stamp_sets_the_version_without_running_migrations(database, chain):
    env = runner_env(database, chain)
    stamped = run(env, "stamp", "a2")
    assert stamped.code == 0 and stamped.summary["outcome"] == "stamped"
    assert database.version() == ["a2"]
    assert not database.table_exists("audit")


def test_sql_output_applies_with_psql_and_matches_upgrade(server, database, tmp_path):
    psql, pg_dump = (str(find_bindir() / tool) for tool in ("psql", "pg_dump"))  # the server's
    offline = run(runner_env(None), "sql", "head")
    assert offline.code == 0, offline.stderr
    assert "CREATE TABLE calls" in offline.stdout
    assert not [e for e in offline.events if e["event"].startswith("db.")]

    other = f"{database.name}_sql"
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other}" OWNER "{server.user}"')
    try:
        env = {"PGPASSWORD": server.password, "PATH": "/usr/bin:/bin"}
        target = ["-h", server.host, "-p", str(server.port), "-U", server.user]
        applied = subprocess.run(
            [psql, *target, "-d", other, "-v", "ON_ERROR_STOP=1", "-q"],
            input=offline.stdout,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stderr
        assert run(runner_env(database)).code == 0

        def schema(db: str) -> str:
            dump = subprocess.run(
                [
                    pg_dump,
                    *target,
                    "-d",
                    db,
                    "--schema-only",
                    "--no-owner",
                    "--exclude-table=migration_runner_ledger*",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            # newer pg_dump brackets the dump with a random "restrict" key
            return "\n".join(line for line in dump.splitlines() if "restrict" not in line)

        assert schema(other) == schema(database.name)
    finally:
        with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_revision_autogenerate_at_head_writes_an_empty_revision(database, tmp_path):
    work = tmp_path / "service"
    shutil.copytree(ROOT / "alembic", work / "alembic")
    shutil.copytree(ROOT / "src", work / "src")
    shutil.copy(ROOT / "alembic.ini", work / "alembic.ini")
    env = runner_env(database, ALEMBIC_CONFIG=str(work / "alembic.ini"))
    assert run(env).code == 0
    made = run(env, "revision", "-m", "nothing changed", "--autogenerate")
    assert made.code == 0, made.stderr
    (path,) = [p for p in (work / "alembic" / "versions").glob("*nothing_changed*.py")]
    body = path.read_text()
    assert (
        "def upgrade() -> None:" in body
        and "op." not in body.split("def upgrade")[1].split("def downgrade")[0]
    )


def test_package_json_serves_the_guides_commands(database):
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not installed")
    scripts = json.loads((ROOT / "package.json").read_text())["scripts"]
    assert {"db:migrate", "db:migrate:create", "db:status", "db:history", "db:migrate:down"} <= set(
        scripts
    )
    env = runner_env(database)
    migrated = subprocess.run(
        [npm, "run", "--silent", "db:migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    status = subprocess.run(
        [npm, "run", "--silent", "db:status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.stdout.startswith("ba8c60a76780 (head)")
