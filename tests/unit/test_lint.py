"""lint: each rule on a revision that breaks it and on one that does not; acknowledgements;
findings named by revision file and line; squawk's rules through the same pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.checklist import lint
from runner.checklist.lint.rules import History, check_revision, table_of
from runner.checklist.lint.sql import Statement, split_statements
from runner.errors import ConfigError
from runner.scripts import load as scripts
from tests.support.helpers import ROOT
from tests.support.verify_helpers import History as Project

CALLS = (
    'op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True), '
    'sa.Column("phone", sa.Text), sa.Column("note", sa.Text))'
)


@pytest.fixture
def history(tmp_path: Path) -> Project:
    history = Project(tmp_path / "project")
    history.add(CALLS)
    return history


def _rules(
    result: lint.LintResult, revision: str, source: str = "runner"
) -> list[tuple[str, str, int | None]]:
    return [
        (f.rule, f.level, f.line)
        for f in result.findings
        if f.revision == revision and f.source == source
    ]


POSITIVE = {
    "drop-table": 'op.drop_table("calls")',
    "drop-column": 'op.drop_column("calls", "note")',
    "rename-table": 'op.rename_table("calls", "phone_calls")',
    "rename-column": 'op.alter_column("calls", "note", new_column_name="remark")',
    "set-not-null-without-backfill": 'op.alter_column("calls", "phone", nullable=False)',
    "change-column-type": 'op.alter_column("calls", "phone", type_=sa.String(64))',
}


@pytest.mark.parametrize("rule", sorted(POSITIVE))
def test_each_rule_finds_its_statement_on_an_existing_table(history, rule):
    rev = history.add("x = 1\n" + POSITIVE[rule])
    result = lint.run_lint(history.load(), squawk=False)
    assert _rules(result, rev) == [(rule, "error", 13)]  # the op.* line of the revision file
    finding = result.errors()[0]
    assert finding.path.endswith("r02_step.py") and finding.table in ("calls",)
    assert not result.ok


@pytest.mark.parametrize("rule", sorted(POSITIVE))
def test_no_rule_fires_on_a_table_created_earlier_in_the_same_revision(tmp_path, rule):
    history = Project(tmp_path / "project")
    history.add(CALLS + "\n" + POSITIVE[rule])
    result = lint.run_lint(history.load(), squawk=False)
    assert result.findings == [] and result.ok


CONTRACT = 'migration_runner = {"phase": "contract"}'


def test_set_not_null_after_add_nullable_and_backfill_is_fine_in_a_contract_revision(history):
    history.add('op.add_column("calls", sa.Column("region", sa.Text(), nullable=True))')
    history.add("op.execute(\"UPDATE calls SET region = 'eu' WHERE region IS NULL\")")
    rev = history.add('op.alter_column("calls", "region", nullable=False)', header=CONTRACT)
    result = lint.run_lint(history.load(), squawk=False)
    assert _rules(result, rev) == [("set-not-null", "info", 13)] and result.ok


@pytest.mark.parametrize(
    ("rule", "statement"),
    [
        ("drop-column", 'op.drop_column("calls", "note")'),
        ("drop-table", 'op.drop_table("calls")'),
        ("set-not-null", 'op.alter_column("calls", "phone", nullable=False)'),
    ],
)
def test_a_destructive_change_in_an_expand_revision_is_an_error_naming_the_contract_phase(
    history, rule, statement
):
    history.add("op.execute(\"UPDATE calls SET phone = '' WHERE phone IS NULL\")")
    rev = history.add(statement)
    result = lint.run_lint(history.load(), squawk=False)
    assert _rules(result, rev) == [(rule, "error", 12)]
    assert result.errors()[0].fix.startswith('mark it contract (migration_runner = {"phase"')
    history.add(statement, header=CONTRACT)  # the same change, marked contract
    marked = lint.run_lint(history.load(), since=rev, squawk=False)
    assert [(f.rule, f.level) for f in marked.findings] == [(rule, "info")]


def test_a_rename_stays_an_error_in_a_contract_revision(history):
    rev = history.add(POSITIVE["rename-column"], header=CONTRACT)
    assert _rules(lint.run_lint(history.load(), squawk=False), rev) == [
        ("rename-column", "error", 13)
    ]


def test_a_backfill_of_another_column_does_not_count(history):
    history.add("op.execute(\"UPDATE calls SET note = 'x'\")")
    rev = history.add('op.alter_column("calls", "phone", nullable=False)')
    assert _rules(lint.run_lint(history.load(), squawk=False), rev) == [
        ("set-not-null-without-backfill", "error", 12)
    ]


def test_an_acknowledged_finding_is_reported_with_its_reason_but_is_no_error(history):
    rev = history.add(
        'op.drop_column("calls", "note")',
        header="""
        # migration-runner: allow drop-column -- release 2.3 stopped reading calls.note
    """,
    )
    result = lint.run_lint(history.load(), squawk=False)
    [finding] = result.findings
    assert (finding.revision, finding.rule, finding.acknowledged) == (
        rev,
        "drop-column",
        "release 2.3 stopped reading calls.note",
    )
    assert result.ok and result.errors() == []


def test_an_acknowledgement_without_a_reason_acknowledges_nothing(history):
    history.add('op.drop_column("calls", "note")', header="# migration-runner: allow drop-column")
    result = lint.run_lint(history.load(), squawk=False)
    assert not result.ok
    assert "acknowledgement without a reason" in result.notes[0] and ":1:" in result.notes[0]


def test_an_acknowledgement_covers_only_the_rules_it_names(history):
    history.add(
        'op.drop_column("calls", "note")\nop.drop_column("calls", "phone")',
        header="# migration-runner: allow rename-column -- not this one",
    )
    assert len(lint.run_lint(history.load(), squawk=False).errors()) == 2


def test_squawk_findings_name_the_revision_file_and_line(history):
    rev = history.add('x = 1\ny = 2\nop.create_index("ix_calls_phone", "calls", ["phone"])')
    result = lint.run_lint(history.load())
    assert ("require-concurrent-index-creation", "warning", 14) in _rules(result, rev, "squawk")


def test_a_concurrent_index_in_an_autocommit_block_satisfies_squawk(history):
    rev = history.add(
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_calls_phone", "calls", ["phone"], postgresql_concurrently=True)'
    )
    rules = [rule for rule, _, _ in _rules(lint.run_lint(history.load()), rev, "squawk")]
    assert "require-concurrent-index-creation" not in rules
    assert "ban-concurrent-index-creation-in-transaction" not in rules


def test_squawk_and_our_rule_on_the_same_drop_report_it_once(history):
    rev = history.add('op.drop_column("calls", "note")')
    result = lint.run_lint(history.load())
    assert [f.rule for f in result.findings if f.revision == rev] == ["drop-column"]


def test_since_lints_only_the_later_revisions_yet_remembers_earlier_backfills(history):
    history.add('op.add_column("calls", sa.Column("region", sa.Text()))')
    backfill = history.add("op.execute(\"UPDATE calls SET region = 'eu'\")")
    last = history.add('op.alter_column("calls", "region", nullable=False)\nop.drop_table("calls")')
    result = lint.run_lint(history.load(), since=backfill, squawk=False)
    assert result.revisions == [last]
    assert [f.rule for f in result.findings] == ["set-not-null", "drop-table"]


def test_since_an_unknown_revision_is_refused(history):
    with pytest.raises(ConfigError, match="--since"):
        lint.run_lint(history.load(), since="nope")


def test_an_env_py_that_cannot_render_offline_sql_is_named(project):
    project.audited_chain(["a1"])
    with pytest.raises(ConfigError, match="offline"):
        lint.run_lint(scripts.load(project.ini), squawk=False)


def test_rules_can_be_turned_off_by_name(history):
    history.add('op.drop_column("calls", "note")')
    assert lint.run_lint(history.load(), squawk=False, exclude=("drop-column",)).findings == []


def test_the_services_own_migrations_have_no_error():
    result = lint.run_lint(scripts.load(ROOT / "alembic.ini"))
    assert result.ok and result.revisions == ["ba8c60a76780"]


# --- pure pieces ---------------------------------------------------------------------------


def test_statements_split_at_semicolons_outside_quotes_and_dollar_bodies():
    text = "UPDATE t SET a = 'x;y'; CREATE FUNCTION f() AS $$ SELECT 1; $$ LANGUAGE sql;\n-- c;\nSELECT \"a;b\""
    assert split_statements(text) == [
        "UPDATE t SET a = 'x;y'",
        "CREATE FUNCTION f() AS $$ SELECT 1; $$ LANGUAGE sql",
        '-- c;\nSELECT "a;b"',
    ]


def test_the_table_of_a_statement():
    assert table_of('ALTER TABLE "public"."Calls" DROP COLUMN x') == "Calls"
    assert (
        table_of("CREATE UNIQUE INDEX CONCURRENTLY ix ON billing.invoices (a)")
        == "billing.invoices"
    )
    assert table_of("UPDATE calls AS c SET a = 1") == "calls"
    assert table_of("SELECT 1") is None


def test_one_alter_table_with_several_actions_yields_each():
    hits = check_revision(
        [
            Statement(
                "ALTER TABLE calls DROP COLUMN a, ALTER COLUMN b TYPE numeric(10, 2), "
                "DROP CONSTRAINT c_fk",
                7,
            )
        ],
        History(),
    )
    assert [(h.rule, h.line) for h in hits] == [("drop-column", 7), ("change-column-type", 7)]


def test_a_squawk_finding_can_be_acknowledged_too(history):
    rev = history.add(
        'op.create_index("ix_calls_phone", "calls", ["phone"])',
        header="# migration-runner: allow require-concurrent-index-creation -- calls is empty until 2.4",
    )
    [finding] = [
        f
        for f in lint.run_lint(history.load()).findings
        if f.revision == rev and f.rule == "require-concurrent-index-creation"
    ]
    assert finding.acknowledged == "calls is empty until 2.4"
