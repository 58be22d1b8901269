"""backfill()'s pure parts: the batch statement, the argument checks, the progress fields."""

from __future__ import annotations

import pytest

from runner.errors import MigrationFailed
from runner.execution.backfill import Batches, estimate_source, progress


def test_a_batch_walks_the_key_from_where_the_last_one_ended():
    batches = Batches("calls", "new_name = old_name", "new_name IS NULL", "id", 500)
    first, rest = batches.statement(True), batches.statement(False)
    assert ":after" not in first and "AND id > :after" in rest
    assert "ORDER BY id LIMIT 500" in rest and "AND (new_name IS NULL) RETURNING 1" in rest
    assert batches.offline() == "UPDATE calls SET new_name = old_name WHERE new_name IS NULL"


@pytest.mark.parametrize(
    "args",
    [
        ("calls; DROP TABLE x", "a = 1", "a IS NULL", "id", 10),
        ("calls", "a = 1", "a IS NULL", "id desc", 10),
        ("calls", "a = 1", " ", "id", 10),
        ("calls", "a = 1", "a IS NULL", "id", 0),
        ("calls", "a = 1", "a IS NULL", "id", 10.5),
    ],
)
def test_bad_arguments_are_the_revisions_mistake_refused_before_anything_runs(args):
    with pytest.raises(MigrationFailed, match="nothing was run"):
        Batches(*args)


def test_a_schema_qualified_or_quoted_table_is_an_identifier():
    Batches('billing."Calls"', "a = 1", "a IS NULL", '"Id"', 10)


def test_progress_estimates_what_is_left_and_when_it_ends():
    fields = progress("calls", done=2000, estimated=10000, batches=2, elapsed_s=2.0)
    assert fields == {
        "table": "calls",
        "rows_done": 2000,
        "rows_left_estimate": 8000,
        "rows_estimate_source": "planner",
        "batches": 2,
        "rows_per_s": 1000,
        "eta_s": 8.0,
        "elapsed_s": 2.0,
    }
    assert progress("calls", 50, 10, 1, 0.0)["rows_left_estimate"] == 0
    assert progress("calls", 0, 10, 1, 0.0)["eta_s"] is None


def test_without_statistics_the_rows_are_counted_up_to_a_bound_else_the_total_is_unknown():
    assert estimate_source(1000.0, None, 100) == "planner"
    assert estimate_source(-1.0, 42, 100) == "counted"  # never analyzed
    assert estimate_source(0.0, 100, 100) == "counted"  # analyzed while empty
    assert estimate_source(-1.0, 101, 100) == "unknown"
    assert estimate_source(None, 5, 100) == "counted"
    unknown = progress("calls", 2000, None, 2, 2.0, "unknown")
    assert unknown["rows_left_estimate"] is None and unknown["eta_s"] is None
    assert unknown["rows_estimate_source"] == "unknown" and unknown["rows_per_s"] == 1000


def test_colons_in_the_fragments_are_sql_not_bind_parameters():
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql

    batches = Batches("calls", "note = 'at 12:30'", "id::text <> ''", "id", 10)
    compiled = text(batches.statement(False)).compile(dialect=postgresql.dialect())
    assert list(compiled.params) == ["after"]
    assert "'at 12:30'" in str(compiled) and "id::text" in str(compiled)
