"""Per-revision limits: which ``lock_timeout`` / ``statement_timeout`` a statement on the
migration session runs under, and how often the blocker watch samples. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

#: the largest lock_timeout/statement_timeout PostgreSQL accepts: 2147483647 ms
MAX_TIMEOUT_S = 2147483.647


def milliseconds(seconds: float) -> int:
    """A timeout in PostgreSQL's milliseconds. A positive value never rounds to 0 (which
    would turn the protection off): at least 1 ms."""
    if seconds <= 0:
        return 0
    return max(1, round(seconds * 1000))


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Per-statement limits for migration sessions, in seconds; 0 means no limit."""

    lock_timeout: float = 5.0
    statement_timeout: float = 0.0

    def for_revision(self, options: tuple[tuple[str, float], ...]) -> Timeouts:
        """These limits with a revision's ``migration_runner = {...}`` overrides applied."""
        return dataclasses.replace(self, **dict(options)) if options else self

    def statement(self) -> str:
        """Session-level, so that they are set once for a run of revisions that share them,
        not once per revision (see :func:`limits_for`)."""
        return (
            f"SELECT set_config('lock_timeout', '{milliseconds(self.lock_timeout)}', false), "
            f"set_config('statement_timeout', '{milliseconds(self.statement_timeout)}', false)"
        )


NO_LIMITS = Timeouts(0.0, 0.0)


def limits_for(revision_limits: Timeouts | None, autocommit: bool) -> Timeouts | None:
    """The limits a statement on the migration session must run under: the revision's own;
    none in a revision's ``autocommit_block`` (``CREATE INDEX CONCURRENTLY`` waits for old
    transactions without blocking anyone, and one cancelled leaves an INVALID index); no
    opinion (None) outside revisions."""
    if revision_limits is None:
        return None
    return NO_LIMITS if autocommit else revision_limits


def watch_every(lock_timeouts: Iterable[float]) -> float:
    """How often the blocker watcher samples: five times within the shortest lock_timeout
    in force, but between 0.1 and 1 s (pg_blocking_pids is not free on a busy server)."""
    shortest = min((t for t in lock_timeouts if t > 0), default=5.0)
    return min(1.0, max(0.1, shortest / 5))
