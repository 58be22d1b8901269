"""Per-revision limits: which ``lock_timeout`` / ``statement_timeout`` a statement on the
migration session runs under, the lock schedule (which ``lock_timeout`` each attempt at a
blocked revision gets, and the pause after it), and how often the side watch samples. Pure."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable

from runner.backoff import BLOCKED, Backoff

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


def for_attempt(
    schedule: LockSchedule,
    attempt: int,
    statement_timeout: float,
    options: tuple[tuple[str, float], ...],
) -> tuple[Timeouts, Timeouts]:
    """A revision's limits at ``attempt`` of ``schedule``, and those of its statements that
    cannot be retried (after its autocommit block): the schedule's largest lock_timeout.
    The revision's own ``migration_runner`` options win over both."""
    return (
        Timeouts(schedule.lock_timeout(attempt), statement_timeout).for_revision(options),
        Timeouts(schedule.largest(), statement_timeout).for_revision(options),
    )


def limits_for(
    revision_limits: Timeouts | None, autocommit: bool, once: Timeouts | None = None
) -> Timeouts | None:
    """The limits a statement on the migration session must run under: the revision's own;
    none in a revision's ``autocommit_block`` (``CREATE INDEX CONCURRENTLY`` waits for old
    transactions without blocking anyone, and one cancelled leaves an INVALID index);
    ``once`` (the schedule's largest lock_timeout) after the revision's autocommit block,
    where a blocked statement cannot be retried; no opinion (None) outside revisions."""
    if revision_limits is None:
        return None
    if autocommit:
        return NO_LIMITS
    return once if once is not None else revision_limits


def watch_every(lock_timeouts: Iterable[float]) -> float:
    """How often the side watch looks for a lock wait: four times within the shortest
    lock_timeout in force, but between 25 ms and 1 s (the look is one row of
    pg_stat_activity; pg_blocking_pids runs only while the migration waits on a lock)."""
    shortest = min((t for t in lock_timeouts if t > 0), default=5.0)
    return min(1.0, max(0.025, shortest / 4))


# --- the lock schedule ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LockSchedule:
    """How a revision that cannot get its table lock is tried: attempt ``n`` (1-based) runs
    under ``timeouts[n - 1]`` (the last one repeats), at most ``attempts`` times (None: as
    many as the budget allows), with a pause from ``pause`` between attempts. ``source``
    names the setting it came from, for messages. A lock_timeout of 0 waits without limit."""

    source: str
    timeouts: tuple[float, ...]
    pause: Backoff
    attempts: int | None = None

    def lock_timeout(self, attempt: int) -> float:
        return self.timeouts[min(attempt, len(self.timeouts)) - 1]

    def largest(self) -> float:
        """The longest a single attempt may wait (0: without limit)."""
        return 0.0 if 0.0 in self.timeouts else max(self.timeouts)

    def pause_after(
        self, attempt: int, blocked_for_s: float, budget_s: float | None, rng: random.Random
    ) -> float | None:
        """The pause before attempt ``attempt + 1``, or None when there is none: the
        attempts are used up, or the pause and the next attempt's whole wait would end after
        ``budget_s`` (None: no budget) counted from the revision's first blocked attempt
        (``blocked_for_s`` ago)."""
        if self.attempts is not None and attempt >= self.attempts:
            return None
        pause = round(self.pause.delay(attempt, rng), 3)
        if budget_s is not None and blocked_for_s + pause + self.lock_timeout(attempt + 1) > (
            budget_s
        ):
            return None
        return pause


#: pauses of the escalating schedule: 0.1-0.2 s doubling to 0.4-0.8 s, so a revision gets
#: through within a second of its blocker ending
SHORT_PAUSES = Backoff(first_s=0.2, max_s=0.8, jitter=(0.5, 1.0))
#: 100 ms for about the first 70 s of a blocker (some 100 attempts), then 0.2, 0.5, 1 s
#: (20 attempts each), then 2 s until the budget is spent
ESCALATING = LockSchedule(
    "MIGRATION_DDL_LOCK_SCHEDULE=escalating",
    (0.1,) * 100 + (0.2,) * 20 + (0.5,) * 20 + (1.0,) * 20 + (2.0,),
    SHORT_PAUSES,
)


def steady(lock_timeout: float, attempts: int, source: str) -> LockSchedule:
    """The schedule before escalating: the same lock_timeout for each of ``attempts``,
    pauses of 1, 2, 4 ... 30 s (+/-25 %)."""
    return LockSchedule(source, (lock_timeout,), BLOCKED, attempts)


STEADY = steady(5.0, 5, "MIGRATION_DDL_LOCK_SCHEDULE=steady")
NONE = LockSchedule("MIGRATION_DDL_LOCK_SCHEDULE=none", (0.0,), SHORT_PAUSES, 1)
NAMED = {"escalating": ESCALATING, "steady": STEADY, "none": NONE}
MAX_ATTEMPTS = 10_000  # an explicit list: more is a typo


def parse_schedule(text: str, source: str) -> LockSchedule:
    """A schedule from its spelling: a name (``escalating``, ``steady``, ``none``) or a list
    of lock_timeouts in seconds, one per attempt, ``t*n`` for ``n`` attempts of ``t``
    (``0.1*10,0.5*5,2``: 16 attempts). Raises ValueError saying what is wrong."""
    spelled = text.strip().lower()
    if spelled in NAMED:
        return dataclasses.replace(NAMED[spelled], source=f"{source}={spelled}")
    timeouts: list[float] = []
    for item in spelled.split(","):
        value, _, times = item.strip().partition("*")
        try:
            seconds, count = float(value), int(times) if times else 1
        except ValueError:
            raise ValueError(
                f"{text!r} is not a schedule: give escalating, steady, none or a list of "
                "seconds such as 0.1*10,0.5*5,2"
            ) from None
        if not 0 <= seconds <= MAX_TIMEOUT_S or count < 1:  # NaN fails the comparison too
            raise ValueError(
                f"{item.strip()!r}: each lock_timeout is 0 (no limit) to {MAX_TIMEOUT_S:g} s, "
                "each count at least 1"
            )
        timeouts += [seconds] * count
        if len(timeouts) > MAX_ATTEMPTS:
            raise ValueError(f"{text!r}: more than {MAX_ATTEMPTS} attempts")
    return LockSchedule(f"{source}={text.strip()}", tuple(timeouts), SHORT_PAUSES, len(timeouts))
