"""The one backoff policy: how long to wait before attempt ``n + 1``.

Used by the connect loop (:mod:`runner.connect`), the retries of a revision that hit
``lock_timeout`` (:mod:`runner.retry`) and the migration lock's fallback poll
(:mod:`runner.lock`). Pure: the random source is passed in.
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
        return capped * rng.uniform(low, high)

    def with_max(self, max_s: float) -> Backoff:
        return dataclasses.replace(self, max_s=max_s)


#: connecting: full jitter from 0.5 s doubling, capped by MIGRATION_RETRY_MAX_INTERVAL
CONNECT = Backoff(first_s=0.5, max_s=5.0, jitter=(0.0, 1.0))
#: a revision that hit lock_timeout: 1, 2, 4 ... 30 s, +/-25 %
BLOCKED = Backoff(first_s=1.0, max_s=30.0, jitter=(0.75, 1.25))
#: the lock's fallback poll between NOTIFYs: 50 ms doubling to 1 s, +/-50 %
LOCK_POLL = Backoff(first_s=0.05, max_s=1.0, jitter=(0.5, 1.5))
