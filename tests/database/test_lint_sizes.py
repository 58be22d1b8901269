"""Size-aware lint: the same statement graded by the live table it locks."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.checklist import lint
from runner.checklist.lint.sizes import TableSize, Thresholds, grade
from tests.support.verify_helpers import History

SMALL = Thresholds(small_rows=100, small_bytes=2**30, large_rows=2_000, large_bytes=2**40)


@pytest.fixture
def history(tmp_path: Path) -> History:
    history = History(tmp_path / "project")
    history.add(
        'op.create_table("calls", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("phone", sa.Text))\n'
        'op.create_table("tiny", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("phone", sa.Text))'
    )
    return history


@pytest.fixture
def sizes(database) -> dict[str, TableSize]:
    """The live tables: calls with 5 000 generated rows, tiny with 5, both analysed."""
    with database.connect() as conn:
        conn.execute(
            "CREATE TABLE calls (id bigint PRIMARY KEY, phone text);"
            "CREATE TABLE tiny (id bigint PRIMARY KEY, phone text);"
            "INSERT INTO calls SELECT n, '+4930' || n FROM generate_series(1, 5000) n;"
            "INSERT INTO tiny SELECT n, '+4930' || n FROM generate_series(1, 5) n;"
            "ANALYZE calls; ANALYZE tiny"
        )
        return lint.table_sizes(conn)


def _graded(result: lint.LintResult, rule: str) -> dict[str, tuple[str, str | None]]:
    return {f.table: (f.level, f.size) for f in result.findings if f.rule == rule}


def test_an_index_without_concurrently_is_an_error_on_a_big_table_and_fine_on_a_tiny_one(
    history, sizes
):
    rev = history.add(
        'op.create_index("ix_calls_phone", "calls", ["phone"])\n'
        'op.create_index("ix_tiny_phone", "tiny", ["phone"])'
    )
    result = lint.run_lint(history.load(), revisions=[rev], sizes=sizes, thresholds=SMALL)
    graded = _graded(result, "require-concurrent-index-creation")
    assert graded["calls"][0] == "error" and graded["calls"][1].startswith("~5,000 rows, ")
    assert graded["tiny"][0] == "info" and graded["tiny"][1].startswith("~5 rows")
    assert [f.table for f in result.errors()] == ["calls"] and result.sized


def test_a_table_rewrite_is_graded_by_the_table_size_too(history, sizes):
    rev = history.add(
        'op.alter_column("calls", "phone", type_=sa.String(64))\n'
        'op.alter_column("tiny", "phone", type_=sa.String(64))',
        header="# migration-runner: allow change-column-type -- no reader of phone yet",
    )
    result = lint.run_lint(history.load(), revisions=[rev], sizes=sizes, thresholds=SMALL)
    assert {t: level for t, (level, _) in _graded(result, "changing-column-type").items()} == {
        "calls": "error",
        "tiny": "info",
    }


def test_a_table_created_by_an_earlier_pending_revision_counts_as_empty(history, sizes):
    created = history.add(
        'op.create_table("fresh", sa.Column("id", sa.BigInteger, primary_key=True))'
    )
    indexed = history.add('op.create_index("ix_fresh", "fresh", ["id"])')
    result = lint.run_lint(
        history.load(), revisions=[created, indexed], sizes=sizes, thresholds=SMALL
    )
    assert _graded(result, "require-concurrent-index-creation") == {
        "fresh": ("info", "~0 rows, 0 bytes")
    }


def test_without_live_sizes_the_same_index_keeps_squawks_level(history):
    rev = history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    result = lint.run_lint(history.load(), revisions=[rev])
    assert _graded(result, "require-concurrent-index-creation") == {"calls": ("warning", None)}


def test_grading_thresholds():
    limits = Thresholds(small_rows=10, small_bytes=1000, large_rows=100, large_bytes=10_000)
    assert grade(TableSize(9, 999), limits) == "info"
    assert grade(TableSize(10, 999), limits) == "warning"
    assert grade(TableSize(9, 1000), limits) == "warning"
    assert grade(TableSize(100, 0), limits) == "error"
    assert grade(TableSize(None, 10_000), limits) == "error"


def test_a_volatile_default_that_rewrites_the_table_is_graded_by_its_size(history, sizes):
    rev = history.add(
        'op.add_column("calls", sa.Column("token", sa.Uuid, server_default=sa.text("gen_random_uuid()")))\n'
        'op.add_column("tiny", sa.Column("token", sa.Uuid, server_default=sa.text("gen_random_uuid()")))'
    )
    result = lint.run_lint(history.load(), revisions=[rev], sizes=sizes, thresholds=SMALL)
    assert {t: level for t, (level, _) in _graded(result, "adding-field-with-default").items()} == {
        "calls": "error",
        "tiny": "info",
    }
