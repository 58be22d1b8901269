"""The decision: given where the database is and where to go, what to do.

Pure functions over plain data (revision ids and the down-revision graph); no I/O. A verb
resolves its target once, computes a :class:`Plan`, logs it, and the execution runs exactly
its steps (:mod:`runner.execution.run` checks Alembic's own step list against it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from runner.errors import ConfigError, DatabaseAhead

Graph = Mapping[str, tuple[str, ...]]  # revision id -> its down revisions; ordered base first


@dataclasses.dataclass(frozen=True)
class Plan:
    """``kind`` (upgrade, downgrade, stamp) from ``current`` to ``target``: ``steps`` are
    the revisions to run, in order (upgrades base first, downgrades head first); a stamp
    runs none."""

    kind: str
    current: tuple[str, ...]
    target: tuple[str, ...]
    steps: tuple[str, ...]
    #: the phase asked for (``expand``, ``contract``), None: every pending revision
    phase: str | None = None
    #: pending revisions the phase leaves for later: the first contract revision and what
    #: comes after it (only with ``phase="expand"``)
    held: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return not self.steps and (self.kind != "stamp" or self.current == self.target)


def ancestry(graph: Graph, revisions: Iterable[str]) -> set[str]:
    """``revisions`` and everything they descend from."""
    seen: set[str] = set()
    stack = list(revisions)
    while stack:
        rev = stack.pop()
        if rev not in seen:
            seen.add(rev)
            stack.extend(graph[rev])
    return seen


def applied(graph: Graph, current: Iterable[str]) -> set[str]:
    """The revisions a database at ``current`` has applied (unknown revisions ignored)."""
    return ancestry(graph, (rev for rev in current if rev in graph))


def plan_upgrade(current: Iterable[str], target: Iterable[str], graph: Graph) -> Plan:
    """Which revisions an upgrade from ``current`` to ``target`` applies, in graph order.

    Raises :class:`DatabaseAhead` when the database is at a revision the scripts do not know
    (typically a newer release migrated it). A database already at or past ``target`` gets
    an empty plan.
    """
    current_t, target_t = _known(current, graph), tuple(sorted(target))
    needed = ancestry(graph, target_t) - ancestry(graph, current_t)
    return Plan("upgrade", current_t, target_t, tuple(rev for rev in graph if rev in needed))


def plan_phase(plan: Plan, graph: Graph, contract: Collection[str], phase: str | None) -> Plan:
    """An upgrade ``plan`` limited to ``phase``. ``expand``: the pending revisions up to,
    not including, the first pending ``contract`` revision (graph order is topological, so
    no revision kept depends on one held); the target becomes where those leave the
    database. ``contract`` or None: every pending revision (the rest). Pure."""
    if phase != "expand":
        return dataclasses.replace(plan, phase=phase)
    kept = expand_steps(plan.steps, contract)
    if len(kept) == len(plan.steps):
        return dataclasses.replace(plan, phase=phase)
    reached = ancestry(graph, plan.current) | set(kept)
    below = {down for rev in reached for down in graph[rev]}
    target = tuple(sorted(rev for rev in reached if rev not in below)) if kept else plan.current
    return Plan("upgrade", plan.current, target, kept, phase, plan.steps[len(kept) :])


def expand_steps(steps: tuple[str, ...], contract: Collection[str]) -> tuple[str, ...]:
    """``steps`` (in graph order) up to, not including, the first ``contract`` one."""
    cut = next((i for i, rev in enumerate(steps) if rev in contract), len(steps))
    return steps[:cut]


def plan_downgrade(current: Iterable[str], target: Iterable[str], graph: Graph) -> Plan:
    """Which revisions a downgrade from ``current`` to ``target`` (``()``: base) reverts,
    newest first, as ``alembic downgrade`` does: everything applied that descends from
    ``target`` (to base: everything applied). A branch that neither leads to ``target`` nor
    descends from it stays: downgrading below a merge to ``b1`` reverts the merge and keeps
    ``b2``. Raises :class:`ConfigError` when ``target`` is not applied (Alembic: "not a
    valid downgrade target")."""
    current_t, target_t = _known(current, graph), tuple(sorted(target))
    active = ancestry(graph, current_t)
    if not target_t:
        undo = active
    else:
        undo = descendants(graph, target_t) & active
        if not undo and not set(target_t) <= set(current_t):
            raise ConfigError(
                f"cannot downgrade to {', '.join(target_t)}: it is not applied (the database "
                f"is at {', '.join(current_t) or 'base'}); give a revision the database has"
            )
    return Plan(
        "downgrade", current_t, target_t, tuple(rev for rev in reversed(list(graph)) if rev in undo)
    )


def descendants(graph: Graph, revisions: Iterable[str]) -> set[str]:
    """Everything that descends from ``revisions``, excluding themselves."""
    children: dict[str, list[str]] = {}
    for rev, down in graph.items():
        for parent in down:
            children.setdefault(parent, []).append(rev)
    seen: set[str] = set()
    stack = [child for rev in revisions for child in children.get(rev, ())]
    while stack:
        rev = stack.pop()
        if rev not in seen:
            seen.add(rev)
            stack.extend(children.get(rev, ()))
    return seen


def plan_stamp(current: Iterable[str], target: Iterable[str]) -> Plan:
    """A stamp sets the version to ``target`` and runs nothing."""
    return Plan("stamp", tuple(sorted(current)), tuple(sorted(target)), ())


def relative_target(current: Iterable[str], steps_back: int, graph: Graph) -> tuple[str, ...]:
    """The revisions ``-N`` names: ``steps_back`` revisions below ``current`` along a linear
    history (``()`` is base). Raises :class:`ConfigError` past base or across a branch or
    merge point, where "N steps" is ambiguous: name the revision instead."""
    heads = _known(current, graph)
    if len(heads) > 1:
        raise ConfigError(
            f"the database is at several heads ({', '.join(heads)}): a relative "
            "downgrade is ambiguous; give a revision id"
        )
    at = heads
    for _ in range(steps_back):
        if not at:
            raise ConfigError(
                f"cannot go {steps_back} revisions back from {', '.join(heads) or 'base'}: "
                "that is past base"
            )
        down = graph[at[0]]
        if len(down) > 1:
            raise ConfigError(
                f"revision {at[0]} merges branches: a relative downgrade across it "
                "is ambiguous; give a revision id"
            )
        at = down
    return at


def _known(current: Iterable[str], graph: Graph) -> tuple[str, ...]:
    current_t = tuple(sorted(current))
    unknown = [rev for rev in current_t if rev not in graph]
    if unknown:
        raise DatabaseAhead(
            f"the database is at revision {', '.join(unknown)}, which these migration scripts do "
            "not contain: a newer release has probably migrated it. Deploy that release (or "
            "newer), or downgrade with the image that has the revision",
            database_revision=unknown,
        )
    return current_t
