"""The decision: given where the database is and where the scripts say to go, what to do.

Pure functions over plain data (revision ids and the down-revision graph); no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from runner.errors import DatabaseAhead

Graph = Mapping[str, tuple[str, ...]]  # revision id -> its down revisions, base first


@dataclasses.dataclass(frozen=True)
class Plan:
    current: tuple[str, ...]
    target: tuple[str, ...]
    pending: tuple[str, ...]  # revisions to apply, in order

    @property
    def up_to_date(self) -> bool:
        return not self.pending


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
    current_t, target_t = tuple(sorted(current)), tuple(sorted(target))
    unknown = [rev for rev in current_t if rev not in graph]
    if unknown:
        raise DatabaseAhead(
            f"the database is at revision {', '.join(unknown)}, which these migration scripts do "
            "not contain: a newer release has probably migrated it. Deploy that release (or "
            "newer), or downgrade with the image that has the revision",
            database_revision=unknown)
    done = ancestry(graph, current_t)
    needed = ancestry(graph, target_t) - done
    order = [rev for rev in graph if rev in needed]  # graph is ordered base -> heads
    return Plan(current_t, target_t, tuple(order))
