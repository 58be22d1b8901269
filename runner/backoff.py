"""The one backoff policy: how long to wait before attempt ``n + 1``.

Used by the connect loop (:mod:`runner.database.connect`), the retries of a revision that hit
``lock_timeout`` (:mod:`runner.execution.retry`) and the migration lock's fallback poll
(:mod:`runner.lock.advisory`). Pure: the random source is passed in.
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``first_s`` doubling up to ``max_s``, times a random factor in
    ``jitter`` (``(0, 1)`` is "full jitter": anything from nothing to the cap)."""

    first_s: float
    max_s: float
    jitter: tuple[float, float] = (1.0, 1.0)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt ``attempt`` (1-based)."""
        capped = min(self.max_s, self.first_s * 2 ** min(attempt - 1, 62))
        low, high = self.jitter
        return float(capped * rng.uniform(low, high))

    def with_max(self, max_s: float) -> Backoff:
        return dataclasses.replace(self, max_s=max_s)


#: connecting to a server that is up but turns us away (too many connections, an error we
#: do not know): full jitter from 0.5 s doubling, capped by MIGRATION_RETRY_MAX_INTERVAL
CONNECT = Backoff(first_s=0.5, max_s=5.0, jitter=(0.0, 1.0))
#: connecting to a server that is not accepting yet (refused, starting up, failing over, DNS):
#: an attempt costs it nothing, so poll about four times a second (never more than five) and
#: connect within a quarter of a second of its accepting
AWAIT_SERVER = Backoff(first_s=0.05, max_s=0.25, jitter=(0.8, 1.0))

#: connection failure kinds (runner.database.connect.classify) that mean no server is accepting yet
NOT_ACCEPTING = frozenset(
    {"refused", "starting_up", "shutting_down", "recovering", "dns", "network", "reset", "timeout"}
)


def for_connect_failure(kind: str, max_interval_s: float) -> Backoff:
    """The policy after a failed connection attempt of ``kind``: quick polling while no
    server accepts (the wake-up after a restart or failover is what a deploy waits on),
    exponential backoff while one is up but overloaded (every attempt costs it a backend).
    Neither waits longer than ``max_interval_s``."""
    policy = AWAIT_SERVER if kind in NOT_ACCEPTING else CONNECT
    return policy.with_max(
        min(policy.max_s, max_interval_s) if kind in NOT_ACCEPTING else max_interval_s
    )


#: a revision that hit lock_timeout: 1, 2, 4 ... 30 s, +/-25 %
BLOCKED = Backoff(first_s=1.0, max_s=30.0, jitter=(0.75, 1.25))
#: the lock's fallback poll between NOTIFYs: 50 ms doubling to 1 s, +/-50 %
LOCK_POLL = Backoff(first_s=0.05, max_s=1.0, jitter=(0.5, 1.5))
