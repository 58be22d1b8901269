"""The plan: which revisions to apply, from plain data."""

import pytest

from runner.errors import DatabaseAhead
from runner.plan import ancestry, plan_upgrade

LINEAR = {"a": (), "b": ("a",), "c": ("b",)}
MERGED = {"a": (), "b1": ("a",), "b2": ("a",), "m": ("b1", "b2")}


def test_empty_database_gets_every_revision_in_order():
    assert plan_upgrade((), ("c",), LINEAR).pending == ("a", "b", "c")


def test_partly_migrated_database_gets_the_rest():
    assert plan_upgrade(("a",), ("c",), LINEAR).pending == ("b", "c")


def test_database_at_target_is_up_to_date():
    plan = plan_upgrade(("c",), ("c",), LINEAR)
    assert plan.up_to_date and plan.pending == ()


def test_database_past_an_older_target_has_nothing_to_upgrade():
    assert plan_upgrade(("c",), ("b",), LINEAR).up_to_date


def test_unknown_database_revision_means_the_database_is_ahead():
    with pytest.raises(DatabaseAhead) as err:
        plan_upgrade(("zzz",), ("c",), LINEAR)
    assert "zzz" in str(err.value)


def test_branches_are_applied_before_their_merge():
    pending = plan_upgrade(("b1",), ("m",), MERGED).pending
    assert pending == ("b2", "m")


def test_ancestry_includes_the_revision_itself():
    assert ancestry(MERGED, ["m"]) == {"a", "b1", "b2", "m"}
