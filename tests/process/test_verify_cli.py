"""The checklist's commands as processes: exit codes, one error event, JSON, annotations,
no secret in any output, and the size-aware gate of check --lint and upgrade --dry-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import ExitCode
from tests.support.helpers import run, runner_env
from tests.support.verify_helpers import History

CALLS = (
    'op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True), '
    'sa.Column("phone", sa.Text))'
)
SMALL = {"MIGRATION_LINT_SMALL_TABLE_ROWS": 10, "MIGRATION_LINT_LARGE_TABLE_ROWS": 500}


@pytest.fixture
def history(tmp_path: Path) -> History:
    history = History(tmp_path / "project")
    history.add(CALLS, 'op.drop_table("calls")')
    return history


def test_verify_exits_20_with_one_error_event_naming_the_failure(history, database):
    history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    result = run(
        runner_env(database, history),
        "verify",
        "--database-url",
        database.url(),
        "--json",
        "--skip",
        "lint",
        timeout=120,
    )
    assert result.code == ExitCode.VERIFY_FAILED, result.stderr
    result.assert_clean()
    error = result.event("error")
    assert error["error_code"] == "verify_failed" and "ix_calls_phone" in error["message"]
    document = json.loads(result.stdout)
    assert [f["check"] for f in document["failures"]] == ["steps", "steps"]
    assert result.summary["exit_code"] == 20


def test_verify_passes_a_clean_history_with_exit_0(history, database):
    result = run(
        runner_env(database, history), "verify", "--database-url", database.url(), timeout=120
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "verify passed: 1 revision(s) walked" in result.stdout


def test_verify_refuses_an_unknown_check_name(history, database):
    result = run(
        runner_env(database, history),
        "verify",
        "--database-url",
        database.url(),
        "--skip",
        "everything",
    )
    assert result.code == ExitCode.CONFIG and "unknown check" in result.event("error")["message"]


def test_lint_exits_21_and_annotates_the_pull_request_under_github_actions(history):
    rev = history.add('op.drop_column("calls", "phone")')
    result = run(runner_env(None, history, GITHUB_ACTIONS="true"), "lint")
    assert result.code == ExitCode.LINT_FAILED
    annotation = next(line for line in result.stdout.splitlines() if line.startswith("::error"))
    assert annotation.startswith(
        f"::error file={history.versions / 'r02_step.py'},line=12,"
        f"title=drop-column ({rev})::drops column calls.phone"
    )
    assert result.event("error")["error_code"] == "lint_failed"


def test_lint_json_is_one_document_and_annotations_go_to_stderr(history):
    history.add(
        'op.drop_column("calls", "phone")  # migration-runner: allow drop-column -- unused since 2.1'
    )
    result = run(runner_env(None, history, GITHUB_ACTIONS="true"), "lint", "--json")
    assert result.code == 0
    document = json.loads(result.stdout)
    assert [f["acknowledged"] for f in document["findings"] if f["rule"] == "drop-column"] == [
        "unused since 2.1"
    ]
    assert "::notice file=" in result.stderr


def _at_first_revision_with_rows(history: History, database, rows: int) -> None:
    assert run(runner_env(database, history), "upgrade", "r01").code == 0
    with database.connect() as conn:
        conn.execute(
            f"INSERT INTO calls (phone) SELECT 'p' || n FROM generate_series(1, {rows}) n; ANALYZE calls"
        )


def test_check_lint_fails_21_when_a_pending_index_would_lock_a_big_table(history, database):
    history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    _at_first_revision_with_rows(history, database, 1000)
    result = run(runner_env(database, history, **SMALL), "check", "--lint", "--json")
    assert result.code == ExitCode.LINT_FAILED, result.stderr
    document = json.loads(result.stdout)
    assert document["pending"] == ["r02"]
    [finding] = [
        f for f in document["lint"]["findings"] if f["rule"] == "require-concurrent-index-creation"
    ]
    assert finding["level"] == "error" and finding["size"].startswith("~1,000 rows")
    result.assert_clean()


def test_check_lint_keeps_checks_own_code_when_the_table_is_tiny(history, database):
    history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    _at_first_revision_with_rows(history, database, 5)
    result = run(runner_env(database, history, **SMALL), "check", "--lint")
    assert result.code == ExitCode.NOT_AT_HEAD, result.stdout + result.stderr
    assert "info  require-concurrent-index-creation" in result.stdout


def test_upgrade_dry_run_lints_what_it_would_apply_and_applies_nothing(history, database):
    history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    _at_first_revision_with_rows(history, database, 1000)
    result = run(runner_env(database, history, **SMALL), "upgrade", "--dry-run")
    assert result.code == ExitCode.LINT_FAILED
    assert result.stdout.startswith("would apply: r02\n")
    assert database.version() == ["r01"]
    assert run(runner_env(database, history), "upgrade", "--dry-run").code == 0  # default limits


def test_verify_names_a_scratch_database_it_cannot_reach_without_its_password(history, database):
    url = database.url(name="no_such_database")
    result = run(runner_env(database, history), "verify", "--database-url", url)
    assert result.code == ExitCode.CONFIG
    assert "cannot connect to its scratch database" in result.event("error")["message"]
    result.assert_clean()


@pytest.mark.parametrize("verb", ["verify", "lint", "check --lint"])
def test_what_a_revision_prints_never_reaches_stdout_of_a_checklist_verb(tmp_path, database, verb):
    history = History(tmp_path / "project")
    history.add(
        'print("HELLO FROM R01"); ' + CALLS, 'print("BYE FROM R01"); op.drop_table("calls")'
    )
    args = verb.split() + ["--json"]
    if verb == "verify":
        args += ["--database-url", database.url()]
    result = run(runner_env(database, history), *args, timeout=120)
    assert result.code in (0, ExitCode.NOT_AT_HEAD), result.stdout + result.stderr
    json.loads(result.stdout)  # one JSON document, nothing else
    said = [e["text"] for e in result.events if e["event"] == "revision.output"]
    assert "HELLO FROM R01" in said
    assert result.events[-1]["event"] == "summary"  # check's 11 logs no error event
    assert result.events[-1]["exit_code"] == result.code


def test_verify_walks_the_rename_example_with_a_backfill_and_a_contract_revision(history, database):
    history.add(
        'op.add_column("calls", sa.Column("number", sa.Text()))',
        'op.drop_column("calls", "number")',
    )
    history.add(
        "from runner import backfill\n"
        'backfill("calls", set="number = phone", where="number IS NULL AND phone IS NOT NULL")'
    )
    history.add(
        'op.drop_column("calls", "phone")',
        'op.add_column("calls", sa.Column("phone", sa.Text()))\n'
        'op.execute("UPDATE calls SET phone = number")',
        header='migration_runner = {"phase": "contract"}',
    )
    result = run(
        runner_env(database, history), "verify", "--database-url", database.url(), timeout=120
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "verify passed: 4 revision(s) walked" in result.stdout


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_verify_never_shows_the_password_of_its_database_url(history, database, json_flag):
    """Found by issue 21: a ``--database-url`` password (not the settings') was printed in
    the error event and the text result."""
    secret = "Other-s3cret/pw"
    url = database.url(password=secret, name="no_such_database")
    result = run(runner_env(database, history), "verify", "--database-url", url, *json_flag)
    assert result.code == ExitCode.CONFIG, result.stderr
    result.assert_clean(secret)
