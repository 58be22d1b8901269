"""Retrying a run of revisions that hit ``lock_timeout``, as the lock schedule says
(:class:`runner.limits.LockSchedule`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from runner.errors import MigrationBlocked
from runner.limits import LockSchedule

if TYPE_CHECKING:
    from runner.observe.logs import Log

T = TypeVar("T")


def retry_blocked(
    run: Callable[[Mapping[str, int]], T],
    *,
    schedule_for: Callable[[str | None], LockSchedule],
    budget_s: float | None,
    log: Log,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``run(attempts)`` (``attempts``: which attempt each blocked revision is at; a
    revision not in it is at its first), retrying while it raises :class:`MigrationBlocked`
    as the blocked revision's schedule (``schedule_for(revision)``) says; when the schedule
    or ``budget_s`` (counted from the revision's first blocked attempt) has no further
    attempt, raise :class:`MigrationBlocked` saying so. A revision that gets through starts
    the next blocked one's schedule afresh. Each blocked attempt is one ``revision.blocked``
    warning. A signal during ``sleep`` raises Interrupted: nothing is in flight then."""
    rng = rng or random.Random()
    attempts: dict[str, int] = {}
    first_blocked: dict[str | None, float] = {}
    while True:
        try:
            return run(attempts)
        except MigrationBlocked as blocked:
            found = blocked.fields.get("revision")
            revision = found if isinstance(found, str) else None
            attempt = attempts.get(revision, 1) if revision else 1
            waited = blocked.fields.get("lock_timeout_s")
            since = first_blocked.setdefault(
                revision, clock() - (waited if isinstance(waited, float) else 0.0)
            )
            schedule = schedule_for(revision)
            pause = schedule.pause_after(attempt, clock() - since, budget_s, rng)
            log.warning(
                "revision.blocked",
                revision=revision,
                attempt=attempt,
                lock_timeout_s=blocked.fields.get("lock_timeout_s"),
                blockers=blocked.fields.get("blockers"),
                next_delay_s=pause,
            )
            if pause is None:
                raise gave_up(blocked, attempt, clock() - since, schedule, budget_s) from None
            if revision:
                attempts[revision] = attempt + 1
            sleep(pause)


def gave_up(
    blocked: MigrationBlocked,
    attempt: int,
    blocked_for_s: float,
    schedule: LockSchedule,
    budget_s: float | None,
) -> MigrationBlocked:
    """The error after the last attempt: which, for how long, and under which setting."""
    budget = f", MIGRATION_DDL_LOCK_BUDGET={budget_s:g} s" if budget_s is not None else ""
    return MigrationBlocked(
        f"{blocked.message}. Gave up after {attempt} attempt{'s' if attempt != 1 else ''} in "
        f"{blocked_for_s:.1f} s ({schedule.source}{budget}); the database is at the last "
        "revision that completed. End or shorten the blocking transaction and run again",
        **{**blocked.fields, "attempts": attempt, "blocked_for_s": round(blocked_for_s, 1)},
    )
