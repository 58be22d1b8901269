"""The one backoff policy, and the three places that use it."""

from __future__ import annotations

import random

import pytest

from runner.backoff import BLOCKED, CONNECT, LOCK_POLL, Backoff, for_connect_failure
from runner.lock.advisory import POLL_MAX_S


def test_fallback_poll_grows_with_jitter_and_stays_bounded():
    rng = random.Random(1)
    seen = [LOCK_POLL.delay(attempt, rng) for attempt in range(1, 31)]
    assert all(0 < d <= POLL_MAX_S * 1.5 for d in seen)
    assert len({round(d, 6) for d in seen}) > 20  # jittered, not a fixed sleep


def test_delay_doubles_from_the_first_up_to_the_cap():
    plain = Backoff(first_s=1.0, max_s=30.0)
    assert [plain.delay(n, random.Random(0)) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert plain.delay(10_000, random.Random(0)) == 30  # no overflow on a long outage


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 12])
def test_blocked_retries_wait_1_2_4_to_30_s_within_25_percent(attempt):
    rng = random.Random(attempt)
    nominal = min(30.0, 2.0 ** (attempt - 1))
    delays = [BLOCKED.delay(attempt, rng) for _ in range(200)]
    assert all(0.75 * nominal <= d <= 1.25 * nominal for d in delays)
    assert max(delays) - min(delays) > 0.2 * nominal  # really jittered


def test_connect_uses_full_jitter_under_the_configured_cap():
    rng = random.Random(3)
    policy = CONNECT.with_max(2.0)
    delays = [policy.delay(n, rng) for n in range(1, 40)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert min(delays) < 0.5 < max(delays)


@pytest.mark.parametrize("kind", ["refused", "starting_up", "recovering", "dns", "reset"])
def test_while_no_server_accepts_connect_polls_four_to_five_times_a_second(kind):
    rng = random.Random(7)
    policy = for_connect_failure(kind, max_interval_s=5.0)
    steady = [policy.delay(n, rng) for n in range(4, 400)]
    assert all(0.2 <= d <= 0.25 for d in steady)  # at most 5 attempts/s, never 0.25 s late
    assert 1 / (sum(steady) / len(steady)) <= 5


@pytest.mark.parametrize("kind", ["too_many_connections", "read_only", "other"])
def test_a_server_that_is_up_but_turns_us_away_gets_exponential_backoff(kind):
    rng = random.Random(7)
    policy = for_connect_failure(kind, max_interval_s=5.0)
    assert policy == CONNECT
    assert max(policy.delay(n, rng) for n in range(8, 60)) > 2.0


def test_a_small_retry_cap_bounds_both_policies():
    rng = random.Random(1)
    for kind in ("refused", "too_many_connections"):
        policy = for_connect_failure(kind, max_interval_s=0.1)
        assert all(policy.delay(n, rng) <= 0.1 for n in range(1, 50))
