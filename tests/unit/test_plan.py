"""The plan: which revisions to apply, from plain data."""

import pytest

from runner.errors import ConfigError, DatabaseAhead
from runner.plan import ancestry, plan_downgrade, plan_stamp, plan_upgrade, relative_target

LINEAR = {"a": (), "b": ("a",), "c": ("b",)}
MERGED = {"a": (), "b1": ("a",), "b2": ("a",), "m": ("b1", "b2")}


def test_empty_database_gets_every_revision_in_order():
    assert plan_upgrade((), ("c",), LINEAR).steps == ("a", "b", "c")


def test_partly_migrated_database_gets_the_rest():
    assert plan_upgrade(("a",), ("c",), LINEAR).steps == ("b", "c")


def test_database_at_target_is_up_to_date():
    plan = plan_upgrade(("c",), ("c",), LINEAR)
    assert plan.up_to_date and plan.steps == ()


def test_database_past_an_older_target_has_nothing_to_upgrade():
    assert plan_upgrade(("c",), ("b",), LINEAR).up_to_date


def test_unknown_database_revision_means_the_database_is_ahead():
    with pytest.raises(DatabaseAhead) as err:
        plan_upgrade(("zzz",), ("c",), LINEAR)
    assert "zzz" in str(err.value)


def test_branches_are_applied_before_their_merge():
    pending = plan_upgrade(("b1",), ("m",), MERGED).steps
    assert pending == ("b2", "m")


def test_ancestry_includes_the_revision_itself():
    assert ancestry(MERGED, ["m"]) == {"a", "b1", "b2", "m"}


def test_downgrade_reverts_newest_first_down_to_the_target():
    plan = plan_downgrade(("c",), ("a",), LINEAR)
    assert (plan.kind, plan.steps, plan.target) == ("downgrade", ("c", "b"), ("a",))


def test_downgrade_to_base_reverts_everything():
    assert plan_downgrade(("c",), (), LINEAR).steps == ("c", "b", "a")


def test_downgrade_into_a_branch_of_a_merge_reverts_the_merge_and_keeps_the_other_branch():
    """As `alembic downgrade b1` from m: m is reverted, b2 (not below b1) stays applied."""
    assert plan_downgrade(("m",), ("b1",), MERGED).steps == ("m",)


def test_downgrade_of_one_labelled_branch_leaves_the_other_branch_alone():
    two_bases = {"e1": (), "c1": (), "e2": ("e1",), "c2": ("c1",)}
    assert plan_downgrade(("c2", "e2"), ("e1",), two_bases).steps == ("e2",)


def test_downgrade_to_a_revision_not_applied_is_refused():
    with pytest.raises(ConfigError, match="not applied"):
        plan_downgrade(("b1",), ("b2",), MERGED)
    with pytest.raises(ConfigError, match="not applied"):
        plan_downgrade(("a",), ("c",), LINEAR)


def test_downgrade_to_the_current_revision_does_nothing():
    assert plan_downgrade(("b",), ("b",), LINEAR).steps == ()


def test_downgrade_from_an_unknown_revision_means_the_database_is_ahead():
    with pytest.raises(DatabaseAhead):
        plan_downgrade(("zzz",), (), LINEAR)


def test_relative_targets_count_back_along_a_linear_history():
    assert relative_target(("c",), 1, LINEAR) == ("b",)
    assert relative_target(("c",), 3, LINEAR) == ()
    with pytest.raises(ConfigError, match="past base"):
        relative_target(("c",), 4, LINEAR)


def test_relative_targets_across_a_merge_or_from_several_heads_are_refused():
    with pytest.raises(ConfigError, match="merges branches"):
        relative_target(("m",), 2, MERGED)
    with pytest.raises(ConfigError, match="several heads"):
        relative_target(("b1", "b2"), 1, MERGED)


def test_a_stamp_runs_nothing_and_is_up_to_date_only_at_its_target():
    plan = plan_stamp(("a",), ("c",))
    assert (plan.steps, plan.up_to_date) == ((), False)
    assert plan_stamp(("c",), ("c",)).up_to_date


# --- phases: expand stops before the first pending contract revision -----------------------

RENAME = {"add": (), "copy": ("add",), "drop": ("copy",), "later": ("drop",)}


def _phased(current, graph, contract, phase):
    from runner.plan import plan_phase

    heads = tuple(rev for rev in graph if not any(rev in downs for downs in graph.values()))
    return plan_phase(plan_upgrade(current, heads, graph), graph, contract, phase)


def test_expand_applies_up_to_not_including_the_first_contract_revision():
    plan = _phased((), RENAME, {"drop"}, "expand")
    assert (plan.steps, plan.target, plan.held) == (("add", "copy"), ("copy",), ("drop", "later"))


def test_expand_never_applies_a_revision_that_depends_on_a_contract_one():
    plan = _phased(("add",), RENAME, {"drop"}, "expand")
    assert "later" not in plan.steps and plan.held == ("drop", "later")


def test_expand_with_only_contract_revisions_pending_is_up_to_date():
    plan = _phased(("copy",), RENAME, {"drop"}, "expand")
    assert plan.up_to_date and plan.held == ("drop", "later") and plan.target == ("copy",)


def test_contract_and_no_phase_apply_the_rest():
    for phase in ("contract", None):
        plan = _phased(("copy",), RENAME, {"drop"}, phase)
        assert (plan.steps, plan.held, plan.phase) == (("drop", "later"), (), phase)


def test_expand_without_contract_revisions_is_a_plain_upgrade():
    plan = _phased((), RENAME, set(), "expand")
    assert plan.steps == ("add", "copy", "drop", "later") and plan.target == ("later",)


def test_expand_on_branches_stops_at_the_contract_branch_and_what_merges_it():
    plan = _phased(("a",), MERGED, {"b2"}, "expand")
    assert (plan.steps, plan.target, plan.held) == (("b1",), ("b1",), ("b2", "m"))
