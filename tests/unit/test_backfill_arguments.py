"""backfill()'s arguments are checked before anything runs: the revision's mistake (exit 6),
never the runner's, and never a second statement."""

from __future__ import annotations

import pytest

from runner.errors import ExitCode, MigrationFailed
from runner.execution.backfill import Batches


def batches(**changes):
    args = {"table": "calls", "set": "v = 1", "where": "v IS NULL", "key": "id", "batch_size": 10}
    return Batches(**{**args, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"where": "true) ; DROP TABLE victim; SELECT (1"},
        {"set": "v = 2; DROP TABLE victim; --"},
        {"key": 123},
        {"where": None},
    ],
    ids=["where-second-statement", "set-second-statement", "key-not-a-string", "where-none"],
)
def test_a_bad_argument_is_the_revisions_mistake_and_runs_nothing(changes):
    with pytest.raises(MigrationFailed) as raised:
        batches(**changes)
    assert raised.value.exit_code == ExitCode.MIGRATION_FAILED
    assert "nothing was run" in raised.value.message


def test_a_semicolon_inside_a_string_literal_is_just_text():
    assert batches(set="note = 'a; b'", where="note <> 'x;y'").set == "note = 'a; b'"
