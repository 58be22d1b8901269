"""The execution runs exactly the plan: Alembic's step list is checked against it."""

from __future__ import annotations

import types

import pytest

from runner.errors import ExitCode, PlanDiverged
from runner.execution.alembic_hooks import alembic_destination, check_steps
from runner.plan import plan_downgrade, plan_stamp, plan_upgrade

LINEAR = {"a": (), "b": ("a",), "c": ("b",)}


def step(revision: str):
    return types.SimpleNamespace(revision=types.SimpleNamespace(revision=revision))


def test_alembic_steps_run_in_the_plan_order():
    plan = plan_upgrade((), ("c",), LINEAR)
    found = [step("b"), step("a"), step("c")]
    assert [s.revision.revision for s in check_steps(plan, found)] == ["a", "b", "c"]


def test_other_steps_than_planned_are_an_internal_error_before_anything_runs():
    plan = plan_upgrade(("a",), ("c",), LINEAR)
    with pytest.raises(PlanDiverged) as raised:
        check_steps(plan, [step("b")])
    assert raised.value.exit_code == ExitCode.INTERNAL
    assert raised.value.fields == {"planned": ["b", "c"], "alembic": ["b"]}


def test_a_stamp_must_reach_the_planned_target():
    plan = plan_stamp(("a",), ("c",))
    assert check_steps(plan, [types.SimpleNamespace(to_revisions=("c",))])
    with pytest.raises(PlanDiverged):
        check_steps(plan, [types.SimpleNamespace(to_revisions=("b",))])


def test_alembic_is_given_the_resolved_target():
    assert alembic_destination(plan_downgrade(("c",), ("a",), LINEAR), "-2") == "a"
    assert alembic_destination(plan_downgrade(("c",), (), LINEAR), "-3") == "base"


def _revision_map():
    from alembic.script.revision import Revision, RevisionMap

    # a linear run, a branch off it, a merge of the two, a revision depending on another
    # branch, and a second root
    shapes = {
        "a": None,
        "b": "a",
        "c": "b",
        "d": "b",
        "m": ("c", "d"),
        "n": "m",
        "x": None,
        "y": "x",
    }

    class Script(Revision):  # what a step needs of a script: its functions
        module = types.SimpleNamespace(upgrade=lambda: None, downgrade=lambda: None)

    revisions = [Script(rev, down) for rev, down in shapes.items()]
    revisions.append(Script("z", "y", dependencies="c"))
    return RevisionMap(lambda: revisions)


def test_the_downgrade_shortcut_answers_as_alembic_does_for_every_step_and_heads():
    import itertools

    from alembic.runtime.migration import RevisionStep

    from runner.execution.alembic_hooks import StepWithHook

    revisions = _revision_map()
    names = ["a", "b", "c", "d", "m", "n", "x", "y", "z"]
    checked = 0
    for name in names:
        for is_upgrade in (False, True):
            original = RevisionStep(revisions, revisions.get_revision(name), is_upgrade)
            wrapped = StepWithHook(original, lambda _step: None)
            others = [n for n in names if n != name]
            for size in range(3):
                for extra in itertools.combinations(others, size):
                    heads = {name, *extra}
                    assert wrapped.should_delete_branch(heads) == original.should_delete_branch(
                        heads
                    ), (name, is_upgrade, heads)
                    checked += 1
    assert checked > 500
