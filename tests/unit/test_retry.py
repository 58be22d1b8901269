"""Retrying revisions that hit lock_timeout: direct tests of runner.execution.retry."""

from __future__ import annotations

import random

import pytest

from runner.backoff import Backoff
from runner.errors import MigrationBlocked, MigrationFailed


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def blocked_then(outcomes):
    """A run that raises MigrationBlocked for each False, returns for True."""
    calls = []

    def run():
        calls.append(len(calls) + 1)
        if not outcomes[len(calls) - 1]:
            raise MigrationBlocked("revision r1 blocked", revision="r1", blockers=[{"pid": 7}])
        return "done"

    return run, calls


def test_a_run_blocked_twice_then_through_sleeps_twice_with_growing_delays():
    from runner.execution.retry import retry_blocked

    run, calls = blocked_then([False, False, True])
    slept: list[float] = []
    log = Log()
    assert (
        retry_blocked(
            run,
            retries=5,
            log=log,
            policy=Backoff(1.0, 30.0),
            sleep=slept.append,
            rng=random.Random(0),
        )
        == "done"
    )
    assert calls == [1, 2, 3] and slept == [1.0, 2.0]
    assert [(e, f["attempt"], f["next_delay_s"], f["revision"]) for e, f in log.events] == [
        ("revision.blocked", 1, 1.0, "r1"),
        ("revision.blocked", 2, 2.0, "r1"),
    ]


def test_the_last_attempt_gives_up_naming_the_setting_and_attempts():
    from runner.execution.retry import retry_blocked

    run, calls = blocked_then([False] * 3)
    slept: list[float] = []
    log = Log()
    with pytest.raises(MigrationBlocked) as raised:
        retry_blocked(run, retries=3, log=log, sleep=slept.append, rng=random.Random(0))
    assert calls == [1, 2, 3] and len(slept) == 2
    assert "Gave up after 3 attempts (MIGRATION_DDL_LOCK_RETRIES)" in raised.value.message
    assert raised.value.fields["attempts"] == 3 and raised.value.fields["revision"] == "r1"
    assert log.events[-1][1]["next_delay_s"] is None


def test_other_failures_are_not_retried():
    from runner.execution.retry import retry_blocked

    calls = []

    def run():
        calls.append(1)
        raise MigrationFailed("boom")

    with pytest.raises(MigrationFailed):
        retry_blocked(run, retries=5, log=Log(), sleep=lambda _s: pytest.fail("slept"))
    assert calls == [1]
