"""verify: each check catches its seeded defect, names it, and passes a clean history."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.checklist import verify
from runner.config.database_url import parse_database_url
from runner.errors import ConfigError
from runner.scripts import load as scripts
from tests.support.helpers import ROOT
from tests.support.verify_helpers import History

CALLS = """
op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                sa.Column("user_id", sa.String(255), nullable=False),
                sa.Column("phone", sa.String(32), nullable=False))
"""
CALLS_MODEL = """
calls = sa.Table("calls", metadata, sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                 sa.Column("user_id", sa.String(255), nullable=False),
                 sa.Column("phone", sa.String(32), nullable=False){extra})
"""


@pytest.fixture
def history(tmp_path: Path) -> History:
    history = History(tmp_path / "project")
    history.add(CALLS, 'op.drop_table("calls")')
    return history


def _verify(history: History, database, *skip: str) -> verify.VerifyResult:
    assert "lint" in skip, "the lint check has tests of its own (below)"
    return verify.run_verify(
        history.load(), parse_database_url(database.url()), skip=frozenset(skip)
    )


def _failures(result: verify.VerifyResult, check: str) -> list[str]:
    return [f.message for f in result.failures if f.check == check]


def test_a_clean_history_passes_every_check(history, database):
    history.add(
        'op.create_index("ix_calls_phone", "calls", ["phone"])',
        'op.drop_index("ix_calls_phone", table_name="calls")',
    )
    history.add(
        'op.add_column("calls", sa.Column("note", sa.Text(), nullable=True))',
        'op.drop_column("calls", "note")',
    )
    history.models(
        CALLS_MODEL.format(
            extra=', sa.Column("note", sa.Text()), sa.Index("ix_calls_phone", "phone")'
        )
    )
    result = _verify(history, database, "lint")
    assert result.failures == []
    assert {n: c.status for n, c in result.checks.items()} == {
        "heads": "passed",
        "steps": "passed",
        "data": "passed",
        "models": "passed",
        "lint": "skipped",
    }
    assert result.revisions_walked == 3
    assert result.ok


def test_a_downgrade_that_forgets_an_index_is_named(history, database):
    rev = history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    result = _verify(history, database, "models", "lint")
    assert [f.revision for f in result.failures] == [rev, rev]
    messages = _failures(result, "steps")
    assert messages[0] == (
        "downgrade of r02 (r02_step.py) does not restore the schema: index ix_calls_phone: not "
        "before the upgrade, present after the downgrade (CREATE INDEX ix_calls_phone ON "
        "public.calls USING btree (phone))"
    )
    assert "does not apply again after its downgrade" in messages[1]
    assert "ix_calls_phone" in messages[1] and "already exists" in messages[1]
    assert result.checks["steps"].status == "failed" and not result.ok


def test_an_enum_type_left_behind_by_a_downgrade_is_named(history, database):
    history.add(
        'op.create_table("moods", sa.Column("m", sa.Enum("sad", "happy", name="mood")))',
        'op.drop_table("moods")',
    )
    result = _verify(history, database, "models", "lint")
    assert _failures(result, "steps")[0] == (
        "downgrade of r02 (r02_step.py) does not restore the schema: enum mood: not before the "
        "upgrade, present after the downgrade ('sad', 'happy')"
    )


def test_the_same_enum_history_passes_when_the_downgrade_drops_the_type(history, database):
    history.add(
        'op.create_table("moods", sa.Column("m", sa.Enum("sad", "happy", name="mood")))',
        'op.drop_table("moods")\nsa.Enum(name="mood").drop(op.get_bind())',
    )
    assert _verify(history, database, "models", "lint").failures == []


def test_not_null_column_without_default_fails_once_rows_exist(history, database):
    rev = history.add(
        'op.add_column("calls", sa.Column("region", sa.Text(), nullable=False))',
        'op.drop_column("calls", "region")',
    )
    result = _verify(history, database, "models", "lint")
    assert [(f.check, f.revision) for f in result.failures] == [("data", rev)]
    message = result.failures[0].message
    assert message.startswith(
        "r02 (r02_step.py) fails on tables with rows in them (filled "
        "calls with 3 rows each): NotNullViolation"
    )
    assert 'column "region"' in message
    assert result.failures[0].path.endswith("r02_step.py")


def test_without_the_data_check_the_same_revision_passes(history, database):
    history.add(
        'op.add_column("calls", sa.Column("region", sa.Text(), nullable=False))',
        'op.drop_column("calls", "region")',
    )
    result = _verify(history, database, "models", "lint", "data")
    assert result.failures == [] and result.checks["data"].status == "skipped"


def test_the_guides_add_nullable_backfill_set_not_null_sequence_passes_with_rows(history, database):
    history.add(
        'op.add_column("calls", sa.Column("region", sa.Text(), nullable=True))',
        'op.drop_column("calls", "region")',
    )
    history.add("op.execute(\"UPDATE calls SET region = 'eu' WHERE region IS NULL\")")
    history.add(
        'op.alter_column("calls", "region", nullable=False)',
        'op.alter_column("calls", "region", nullable=True)',
    )
    result = _verify(history, database, "models", "lint")
    assert result.failures == []
    assert database.query("SELECT count(*) FROM calls")[0][0] == 9  # rows before r02, r03, r04


def test_a_unique_index_over_rows_that_repeat_a_value_is_named(history, database):
    history.add(
        'op.add_column("calls", sa.Column("kind", sa.Text(), server_default="x"))',
        'op.drop_column("calls", "kind")',
    )
    rev = history.add(
        'op.create_index("ux_calls_kind", "calls", ["kind"], unique=True)',
        'op.drop_index("ux_calls_kind", table_name="calls")',
    )
    result = _verify(history, database, "models", "lint")
    assert [(f.check, f.revision) for f in result.failures] == [("data", rev)]
    assert "UniqueViolation" in result.failures[0].message


def test_models_that_drifted_from_the_migrations_are_listed(history, database):
    history.models(
        CALLS_MODEL.format(extra=', sa.Column("duration_s", sa.Integer())')
        + 'users = sa.Table("users", metadata, sa.Column("id", sa.Integer, primary_key=True))\n'
    )
    result = _verify(history, database, "lint")
    assert sorted(_failures(result, "models")) == [
        "models and migrations differ: column calls.duration_s in the models only (add a "
        "revision: migration-runner revision --autogenerate -m ...)",
        "models and migrations differ: table users in the models only (add a revision: "
        "migration-runner revision --autogenerate -m ...)",
    ]


def test_models_that_match_pass_and_the_check_can_be_turned_off(history, database):
    history.models(CALLS_MODEL.format(extra=""))
    assert _verify(history, database, "lint").failures == []
    with database.connect() as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    history.models(CALLS_MODEL.format(extra=', sa.Column("duration_s", sa.Integer())'))
    assert _verify(history, database, "lint", "models").failures == []


def test_an_env_py_without_target_metadata_skips_the_models_check_with_a_note(history, database):
    result = _verify(history, database, "lint")
    assert result.failures == []
    assert result.checks["models"].status == "skipped"
    assert "target_metadata" in result.checks["models"].notes[0]


def test_two_heads_are_named_with_the_merge_command(history, database):
    history.revision("b1", "r01", "pass")
    history.revision("b2", "r01", "pass")
    result = _verify(history, database, "lint")
    assert _failures(result, "heads") == [
        "2 heads: b1 (b1_step.py), b2 (b2_step.py); merge them with "
        '`migration-runner merge -m "merge heads"`'
    ]


def test_a_merged_history_walks_through_its_merge_point(history, database):
    history.revision(
        "b1", "r01", 'op.create_table("a", sa.Column("x", sa.Integer))', 'op.drop_table("a")'
    )
    history.revision(
        "b2", "r01", 'op.create_table("b", sa.Column("x", sa.Integer))', 'op.drop_table("b")'
    )
    history.revision("m1", ("b1", "b2"), "pass")
    result = _verify(history, database, "lint", "models")
    assert result.failures == [] and result.revisions_walked == 4
    assert result.checks["steps"].notes == ["merge point m1: down/up not checked"]


def test_unknown_check_names_are_refused():
    with pytest.raises(ConfigError, match="unknown check"):
        verify.parse_skip(["steps", "speling"])


def test_a_database_that_is_not_empty_is_refused(history, database):
    with database.connect() as conn:
        conn.execute("CREATE TABLE precious (id int)")
    with pytest.raises(ConfigError, match="empty scratch database"):
        _verify(history, database, "lint")


def test_the_services_own_migrations_pass(database):
    result = verify.run_verify(
        scripts.load(ROOT / "alembic.ini"),
        parse_database_url(database.url()),
        skip=frozenset({"lint"}),
    )
    assert result.failures == []
    assert result.checks["models"].status == "passed"


def _lint(loaded, since):
    from runner.checklist import lint

    return lint.run_lint(loaded, since=since, squawk=False)


def test_the_lint_check_fails_on_an_error_level_finding_and_names_its_file(history, database):
    rev = history.add(
        'op.drop_column("calls", "phone")',
        'op.add_column("calls", sa.Column("phone", sa.String(32)))',
    )
    result = verify.run_verify(
        history.load(),
        parse_database_url(database.url()),
        skip=frozenset({"models", "steps"}),
        lint=_lint,
    )
    assert [(f.check, f.revision) for f in result.failures] == [("lint", rev)]
    assert result.failures[0].message.startswith(
        f"{rev} {result.failures[0].path}:12: drop-column: "
    )
    assert result.checks["lint"].status == "failed"


def test_the_lint_check_since_a_revision_leaves_earlier_ones_alone(history, database):
    history.add(
        'op.drop_column("calls", "phone")',
        'op.add_column("calls", sa.Column("phone", sa.String(32)))',
    )
    later = history.add('op.create_table("x", sa.Column("id", sa.Integer))', 'op.drop_table("x")')
    result = verify.run_verify(
        history.load(),
        parse_database_url(database.url()),
        skip=frozenset({"models", "steps"}),
        since="r02",
        lint=_lint,
    )
    assert result.failures == [] and result.lint.revisions == [later]


def test_a_column_type_that_drifted_is_named_with_both_types(history, database):
    history.models(CALLS_MODEL.format(extra="").replace("sa.String(32)", "sa.String(64)"))
    assert _failures(_verify(history, database, "lint"), "models") == [
        "models and migrations differ: column calls.phone type: VARCHAR(length=32) in the "
        "migrations, String(length=64) in the models (add a revision: migration-runner "
        "revision --autogenerate -m ...)"
    ]


def test_a_scratch_database_the_role_cannot_create_in_is_a_configuration_error(tmp_path, database):
    """Not "env.py fails ... InsufficientPrivilege" (exit 20, the project blamed): the
    environment's fault, exit 2, naming the grant."""
    import uuid

    import psycopg

    from runner.errors import ExitCode
    from tests.support.helpers import pg_url, run, runner_env
    from tests.support.verify_helpers import History

    history = History(tmp_path / "project")
    history.add(
        'op.create_table("calls", sa.Column("id", sa.BigInteger, primary_key=True))',
        'op.drop_table("calls")',
    )
    role, secret = f"weak_{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex}"
    admin = psycopg.connect(database.server.admin_conninfo, dbname=database.name, autocommit=True)
    with admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        try:
            url = pg_url(role, secret, database.server.host, database.server.port, database.name)
            assert role in url and secret in url
            result = run(
                runner_env(None, history),
                "verify",
                "--skip",
                "lint",
                "--database-url",
                url,
                timeout=120,
            )
        finally:
            admin.execute(f"DROP ROLE {role}")
    assert result.code == ExitCode.CONFIG, result.stdout + result.stderr
    message = result.event("error")["message"]
    assert "GRANT CREATE ON SCHEMA public" in message and role in message
    result.assert_clean(secret)


def test_a_revision_that_calls_sys_exit_fails_the_walk_naming_it(history, database):
    """Not "unexpected SystemExit: 0; please report this" (exit 1), nor a pass."""
    history.add("import sys\nsys.exit(0)")
    result = _verify(history, database, "lint")
    assert not result.ok
    messages = [f.message for f in result.failures]
    assert any("r02" in m and "SystemExit: 0" in m and "never sys.exit()" in m for m in messages)
    assert result.checks["steps"].status == "incomplete"
