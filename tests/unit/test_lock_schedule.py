"""The lock schedule (runner.limits): which lock_timeout each attempt at a blocked revision
gets, the pauses between attempts, the budget, and how the setting is spelled."""

from __future__ import annotations

import random

import pytest

from runner.limits import (
    ESCALATING,
    NO_LIMITS,
    STEADY,
    Timeouts,
    for_attempt,
    limits_for,
    parse_schedule,
    watch_every,
)


def test_the_default_starts_at_100_ms_and_stays_there_for_a_minute_of_attempts():
    assert [ESCALATING.lock_timeout(n) for n in (1, 2, 50, 100)] == [0.1] * 4
    assert [ESCALATING.lock_timeout(n) for n in (101, 121, 141, 161, 5000)] == [
        0.2,
        0.5,
        1.0,
        2.0,
        2.0,
    ]
    assert ESCALATING.largest() == 2.0 and ESCALATING.attempts is None


def test_the_default_pauses_are_jittered_short_and_never_above_800_ms():
    rng = random.Random(3)
    pauses = [ESCALATING.pause_after(n, 0.0, None, rng) for n in range(1, 200)]
    assert all(p is not None and 0.1 <= p <= 0.8 for p in pauses)
    assert len(set(pauses)) > 100  # jittered
    assert min(pauses[10:]) >= 0.4  # grown to 0.4-0.8 s


def test_a_blocker_of_60_s_is_outlasted_at_100_ms_under_the_default():
    rng, waited, attempt = random.Random(1), 0.0, 1
    while waited < 60.0:
        waited += ESCALATING.lock_timeout(attempt)
        waited += ESCALATING.pause_after(attempt, waited, 300.0, rng) or 0
        attempt += 1
    assert ESCALATING.lock_timeout(attempt) == 0.1


def test_the_budget_stops_the_attempts_before_it_would_be_exceeded():
    rng = random.Random(0)
    assert ESCALATING.pause_after(5, 299.5, 300.0, rng) is None
    assert ESCALATING.pause_after(5, 10.0, 300.0, rng) is not None
    assert ESCALATING.pause_after(5, 10_000.0, None, rng) is not None


def test_steady_is_the_old_default_five_attempts_of_5_s():
    assert STEADY.timeouts == (5.0,) and STEADY.attempts == 5
    assert STEADY.pause_after(5, 0.0, None, random.Random(0)) is None
    assert 0.75 <= STEADY.pause_after(1, 0.0, None, random.Random(0)) <= 1.25


@pytest.mark.parametrize(
    ("spelled", "timeouts"),
    [
        ("0.1*3,0.5,2*2", (0.1, 0.1, 0.1, 0.5, 2.0, 2.0)),
        ("5", (5.0,)),
        (" 0.05 * 2 , 0 ", (0.05, 0.05, 0.0)),
    ],
)
def test_an_explicit_list_is_one_lock_timeout_per_attempt(spelled, timeouts):
    schedule = parse_schedule(spelled, "MIGRATION_DDL_LOCK_SCHEDULE")
    assert schedule.timeouts == timeouts and schedule.attempts == len(timeouts)
    assert schedule.source == f"MIGRATION_DDL_LOCK_SCHEDULE={spelled.strip()}"


def test_a_list_ending_in_0_finally_waits_without_limit():
    assert parse_schedule("0.1*2,0", "x").largest() == 0.0


@pytest.mark.parametrize("spelled", ["fast", "0.1*0", "-1", "0.1,,2", "nan", "1*x", "0.1*20000"])
def test_a_bad_spelling_says_what_is_wrong(spelled):
    with pytest.raises(ValueError, match=r"schedule|lock_timeout|attempts"):
        parse_schedule(spelled, "MIGRATION_DDL_LOCK_SCHEDULE")


def test_names_are_case_insensitive_and_none_never_times_out():
    assert parse_schedule("Steady", "S").timeouts == STEADY.timeouts
    none = parse_schedule("none", "S")
    assert none.lock_timeout(1) == 0.0 and none.attempts == 1


def test_a_revision_option_wins_over_the_schedule_and_after_autocommit_the_largest_applies():
    limits, once = for_attempt(ESCALATING, 1, 30.0, ())
    assert limits == Timeouts(0.1, 30.0) and once == Timeouts(2.0, 30.0)
    limits, once = for_attempt(ESCALATING, 1, 30.0, (("lock_timeout", 0.0),))
    assert limits.lock_timeout == 0.0 and once.lock_timeout == 0.0
    assert limits_for(limits, autocommit=True, once=once) == NO_LIMITS
    assert limits_for(Timeouts(0.1, 0), autocommit=False, once=Timeouts(2.0, 0)).lock_timeout == 2.0
    assert limits_for(None, autocommit=False) is None


def test_the_watch_looks_four_times_within_the_shortest_lock_timeout():
    assert watch_every([0.1, 5.0]) == 0.025
    assert watch_every([5.0]) == 1.0
    assert watch_every([0.0]) == 1.0
