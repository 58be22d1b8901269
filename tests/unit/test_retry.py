"""Retrying revisions that hit lock_timeout: direct tests of runner.execution.retry."""

from __future__ import annotations

import random

import pytest

from runner.backoff import Backoff
from runner.errors import MigrationBlocked, MigrationFailed
from runner.limits import ESCALATING, LockSchedule, steady


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


class Clock:
    """Time moves only when the code sleeps (and by what an attempt waited)."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def blocked_then(outcomes, revisions=None, clock=None, schedule=ESCALATING):
    """A run that raises MigrationBlocked for each False, returns for True; each blocked
    attempt 'waits' its lock_timeout on ``clock``."""
    calls: list[dict] = []

    def run(attempts):
        calls.append(dict(attempts))
        n = len(calls) - 1
        revision = revisions[n] if revisions else "r1"
        if not outcomes[n]:
            timeout = schedule.lock_timeout(attempts.get(revision, 1))
            if clock:
                clock.now += timeout
            raise MigrationBlocked(
                f"revision {revision} blocked",
                revision=revision,
                blockers=[{"pid": 7}],
                lock_timeout_s=timeout,
            )
        return "done"

    return run, calls


def retry(run, schedule=ESCALATING, budget_s=300.0, clock=None, log=None):
    from runner.execution.retry import retry_blocked

    clock = clock or Clock()
    return retry_blocked(
        run,
        schedule_for=lambda _revision: schedule,
        budget_s=budget_s,
        log=log or Log(),
        rng=random.Random(0),
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )


def test_each_attempt_names_its_number_and_lock_timeout_and_the_next_attempt_is_its_own():
    plain = LockSchedule("test", (0.1, 0.2, 0.5), Backoff(1.0, 30.0), attempts=None)
    run, calls = blocked_then([False, False, True], schedule=plain)
    log = Log()
    assert retry(run, schedule=plain, log=log) == "done"
    assert calls == [{}, {"r1": 2}, {"r1": 3}]
    assert [
        (e, f["attempt"], f["lock_timeout_s"], f["next_delay_s"], f["revision"])
        for e, f in log.events
    ] == [("revision.blocked", 1, 0.1, 1.0, "r1"), ("revision.blocked", 2, 0.2, 2.0, "r1")]


def test_a_revision_that_got_through_lets_the_next_blocked_one_start_its_schedule():
    run, calls = blocked_then([False, False, True], revisions=["r1", "r2", "r2"])
    assert retry(run) == "done"
    # r1 got through at its second attempt; r2 was blocked at its first, then at its second
    assert calls == [{}, {"r1": 2}, {"r1": 2, "r2": 2}]


def test_the_budget_ends_the_schedule_with_an_error_naming_setting_and_attempts():
    clock = Clock()
    run, calls = blocked_then([False] * 10_000, clock=clock)
    log = Log()
    with pytest.raises(MigrationBlocked) as raised:
        retry(run, budget_s=20.0, clock=clock, log=log)
    assert clock.now <= 20.0 and clock.now > 15.0  # used, not exceeded
    attempts = raised.value.fields["attempts"]
    assert attempts == len(calls) and attempts > 20  # many short attempts
    assert "MIGRATION_DDL_LOCK_SCHEDULE=escalating" in raised.value.message
    assert "MIGRATION_DDL_LOCK_BUDGET=20 s" in raised.value.message
    assert f"Gave up after {attempts} attempts" in raised.value.message
    assert raised.value.fields["blockers"] == [{"pid": 7}]
    assert log.events[-1][1]["next_delay_s"] is None


def test_a_steady_schedule_gives_up_after_its_attempts_naming_the_old_settings():
    schedule = steady(0.5, 3, "MIGRATION_DDL_LOCK_TIMEOUT=0.5 with MIGRATION_DDL_LOCK_RETRIES=3")
    run, calls = blocked_then([False] * 3, schedule=schedule)
    with pytest.raises(MigrationBlocked) as raised:
        retry(run, schedule=schedule, budget_s=None)
    assert len(calls) == 3 and raised.value.fields["attempts"] == 3
    assert "MIGRATION_DDL_LOCK_RETRIES=3" in raised.value.message


def test_other_failures_are_not_retried():
    calls = []

    def run(_attempts):
        calls.append(1)
        raise MigrationFailed("boom")

    with pytest.raises(MigrationFailed):
        retry(run)
    assert calls == [1]
