"""What a run learns and what a verb returns.

:class:`Facts` are what a run learns as it goes (where the database was, what was applied, how
long the lock took), so that the one ``summary`` event is complete whichever step fails. A verb
returns an :class:`Outcome` and, for verbs that print one, a document (:class:`Result`). Verbs
never choose an exit code: the CLI maps a :class:`Result` (or an error) to one, and writes the
summary from it and the run's :class:`Facts`.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any


class Outcome(enum.StrEnum):
    """How a run ended; logged as the summary's ``outcome``."""

    MIGRATED = "migrated"  # upgrade applied revisions
    UP_TO_DATE = "up_to_date"  # upgrade: nothing pending
    DATABASE_AHEAD = "database_ahead"  # upgrade: ahead, accepted (MIGRATION_ALLOW_DATABASE_AHEAD)
    DOWNGRADED = "downgraded"
    STAMPED = "stamped"
    AT_HEAD = "at_head"  # current/check/history: where the database stands
    BEHIND = "behind"
    EMPTY = "empty"
    AHEAD = "ahead"
    CONTRACT_PENDING = "contract_pending"  # check --phase expand: only contract revisions pending
    SEVERAL_HEADS = "several_heads"  # heads: the scripts need a merge
    OK = "ok"  # a verb that only prints or writes files
    PASSED = "passed"  # verify, lint, upgrade --dry-run: nothing blocks
    CHECKS_FAILED = "checks_failed"  # verify: a check failed
    LINT_ERRORS = "lint_errors"  # lint, check --lint, upgrade --dry-run: an error-level finding
    FAILED = "failed"  # an error (the CLI's, never a verb's)
    INTERRUPTED = "interrupted"  # SIGTERM/SIGINT (the CLI's)
    APP_NOT_STARTED = "app_not_started"  # upgrade --then: migrated, the app cannot start


@dataclasses.dataclass(frozen=True)
class Result:
    """A verb's result: its outcome, and what it prints (``document`` as JSON with
    ``--json``, else ``text``); None for verbs that print nothing."""

    outcome: Outcome
    document: dict[str, Any] | None = None
    text: str = ""
    #: GitHub Actions workflow commands (``::error file=...``), printed under Actions only
    annotations: tuple[str, ...] = ()


@dataclasses.dataclass
class Facts:
    """``None`` means never learned."""

    from_revision: list[str] | None = None
    to_revision: list[str] | None = None
    applied: list[str] = dataclasses.field(default_factory=list)
    connect_attempts: int = 0
    lock_wait_ms: int | None = None
    #: attempts at the plan: 1, plus one for each time a revision was blocked (lock_timeout)
    attempts: int = 0
    #: the revision that took longest: {"revision": ..., "duration_ms": ...}
    longest_revision: dict[str, Any] | None = None
    #: the phase asked for (``upgrade --phase``, ``MIGRATION_PHASE``)
    phase: str | None = None
    #: pending revisions the phase left for the contract phase
    held: list[str] = dataclasses.field(default_factory=list)
    #: the RDS snapshot taken before migrating (MIGRATION_SNAPSHOT)
    snapshot: str | None = None
    #: each ``backfill()`` run: table, rows done, whether it finished
    backfills: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: what a failed or stopped revision committed of itself and keeps (an autocommit block,
    #: a backfill's batches): revision, direction, committed_statements, backfills; empty: none
    not_rolled_back: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def record(self, kind: str, step: Any) -> None:
        """A step committed (``step``: its revision and duration_ms); a stamp applies nothing."""
        if kind == "stamp":
            return
        self.applied.append(step.revision)
        if self.longest_revision is None or step.duration_ms > self.longest_revision["duration_ms"]:
            self.longest_revision = {"revision": step.revision, "duration_ms": step.duration_ms}

    def database_at(self, revision: tuple[str, ...]) -> None:
        """The database is at ``revision`` (before and, so far, after)."""
        self.from_revision = self.to_revision = list(revision)
