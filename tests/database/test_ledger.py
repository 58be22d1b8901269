"""The audit ledger: written with each revision, adopted by old databases, catching edits."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from runner.database.ledger import Entry, Ledger, edited
from runner.errors import ExitCode
from tests.support.helpers import run, runner_env

ROWS = "SELECT revision, outcome, checksum IS NOT NULL FROM migration_runner_ledger ORDER BY id"


def test_edited_lists_only_applied_revisions_whose_file_changed():
    latest = {
        "a": {"outcome": "applied", "checksum": "1", "finished_at": "t"},
        "b": {"outcome": "adopted", "checksum": "2", "finished_at": "t"},
        "c": {"outcome": "reverted", "checksum": "3", "finished_at": "t"},
    }
    files = {"a": "1", "b": "changed", "c": "changed"}
    assert [e["revision"] for e in edited(latest, files, ["a", "b", "c"])] == ["b"]
    assert edited(latest, files, ["a"]) == []


def test_each_revision_is_recorded_in_its_own_transaction(database, project):
    project.audited_chain(["a1"])
    project.revision("a2", "a1", "raise RuntimeError('no')")
    env = runner_env(database, project)
    assert run(env).code == ExitCode.MIGRATION_FAILED
    assert database.query(ROWS) == [("a1", "applied", True)]  # nothing for the rolled-back a2

    project.revision("a2", "a1", "pass")
    assert run(env).code == 0
    assert run(env, "downgrade", "-1").code == 0
    assert database.query(ROWS) == [
        ("a1", "applied", True),
        ("a2", "applied", True),
        ("a2", "reverted", True),
    ]
    ran_on, version, duration = database.query(
        "SELECT ran_on, runner_version, duration_ms FROM migration_runner_ledger LIMIT 1"
    )[0]
    assert ran_on and version and duration >= 0


def test_a_database_without_a_ledger_adopts_one(database, project):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    plain = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(project.ini), "upgrade", "a2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0, plain.stderr
    assert not database.table_exists("migration_runner_ledger")
    project.revision("a3", "a2", "pass")
    result = run(env)
    assert result.code == 0
    assert result.event("ledger.ready")["adopted"] == 2
    assert database.query(ROWS) == [
        ("a1", "adopted", True),
        ("a2", "adopted", True),
        ("a3", "applied", True),
    ]


def test_an_edited_applied_migration_is_caught(database, project):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    assert run(env).code == 0
    path = project.versions / "a1_step.py"
    path.write_text(path.read_text() + "\n# edited after it was applied\n")

    warned = run(env, "check", "--json")
    assert warned.code == 0
    assert [e["revision"] for e in json.loads(warned.stdout)["edited"]] == ["a1"]
    assert warned.event("scripts.edited")["level"] == "warning"

    strict = run(dict(env, MIGRATION_STRICT_CHECKSUMS="true"), "check")
    assert strict.code == ExitCode.EDITED_MIGRATION
    assert (
        "a1" in strict.event("error")["message"] and str(path) in strict.event("error")["message"]
    )

    upgrade = run(env)
    assert upgrade.code == 0 and upgrade.event("scripts.edited")["edited"][0]["revision"] == "a1"
    assert run(dict(env, MIGRATION_STRICT_CHECKSUMS="true")).code == ExitCode.EDITED_MIGRATION


def test_history_shows_the_ledger(database, project):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    run(env, "upgrade", "a1")
    doc = json.loads(run(env, "history", "--json").stdout)
    a1, a2 = doc["revisions"]
    assert a1["ledger"]["outcome"] == "applied" and a1["ledger"]["checksum"]
    assert a2["ledger"] is None
    text = run(env, "history").stdout.splitlines()
    assert " applied 20" in text[1] and "ms)" in text[1]


def test_ledger_rows_are_quoted_by_psycopg_and_travel_with_the_commit():
    ledger = Ledger("ledger", "audit", "1.0", "host 'a'")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    statement = ledger.insert_and_commit(
        [
            Entry("a1'; DROP TABLE x; --", "applied", None, at, 7),
            Entry("a2", "applied", "c" * 64, at, 8),
        ]
    )
    assert statement == (
        'INSERT INTO "audit"."ledger" (revision, outcome, checksum, started_at, duration_ms, '
        "detail, runner_version, ran_on) VALUES ('a1''; DROP TABLE x; --', 'applied', NULL, "
        "'2026-01-02 03:04:05+00:00'::timestamptz, 7, NULL, '1.0', 'host ''a'''), ('a2', "
        f"'applied', '{'c' * 64}', '2026-01-02 03:04:05+00:00'::timestamptz, 8, NULL, '1.0', "
        "'host ''a'''); COMMIT"
    )


def test_a_stamp_records_what_it_did_both_ways_and_history_reads_it(database, project):
    for rev, down in (("a1", None), ("a2", "a1"), ("a3", "a2")):
        project.revision(rev, down, f"op.execute('CREATE TABLE t_{rev} (id int)')")
    env = runner_env(database, project)
    assert run(env, "upgrade", "a1").code == 0

    def rows() -> list[tuple[str, str, bool, str | None]]:
        return database.query(
            "SELECT revision, outcome, checksum IS NOT NULL, detail FROM "
            "migration_runner_ledger WHERE outcome <> 'applied' ORDER BY id"
        )

    up = run(env, "stamp", "a3")
    assert up.code == 0 and up.summary["applied"] == [] and up.summary["to_revision"] == ["a3"]
    assert rows() == [
        ("a2", "stamped", True, "stamp a1 -> a3"),
        ("a3", "stamped", True, "stamp a1 -> a3"),
    ]
    down = run(env, "stamp", "a1")
    assert (
        down.code == 0 and down.summary["applied"] == [] and down.summary["to_revision"] == ["a1"]
    )
    assert rows()[2:] == [
        ("a2", "unstamped", True, "stamp a3 -> a1"),
        ("a3", "unstamped", True, "stamp a3 -> a1"),
    ]
    assert run(env, "stamp", "base").code == 0
    assert rows()[4:] == [("a1", "unstamped", True, "stamp a1 -> base")]
    history = json.loads(run(env, "history", "--json").stdout)
    by_id = {row["revision"]: row for row in history["revisions"]}
    assert [by_id[r]["applied"] for r in ("a1", "a2", "a3")] == [False, False, False]
    assert by_id["a2"]["ledger"]["outcome"] == "unstamped"
    assert "unstamped" in run(env, "history").stdout


def test_an_older_ledger_is_brought_up_to_date_under_the_lock(database, project):
    project.revision("a1", None, "pass")
    project.revision("a2", "a1", "pass")
    env = runner_env(database, project)
    assert run(env, "upgrade", "a1").code == 0
    with database.connect() as conn:  # as the previous runner version left it
        conn.execute(
            "ALTER TABLE migration_runner_ledger DROP COLUMN detail, DROP CONSTRAINT "
            "migration_runner_ledger_outcome_check, ADD CONSTRAINT "
            "migration_runner_ledger_outcome_check CHECK (outcome IN "
            "('applied', 'reverted', 'stamped', 'adopted'))"
        )
    assert run(env, "current").code == 0  # reads an older ledger as it is
    assert run(env, "stamp", "base").code == 0
    assert database.query(
        "SELECT outcome, detail FROM migration_runner_ledger ORDER BY id DESC LIMIT 1"
    ) == [("unstamped", "stamp a1 -> base")]
