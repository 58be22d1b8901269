"""Retrying a run of revisions that hit ``lock_timeout``, with the one backoff policy."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from runner.backoff import BLOCKED, Backoff
from runner.errors import MigrationBlocked

T = TypeVar("T")


def retry_blocked(
    run: Callable[[], T],
    *,
    retries: int,
    log: Any,
    policy: Backoff = BLOCKED,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``run``, retrying with backoff while it raises :class:`MigrationBlocked`; after
    ``retries`` attempts raise :class:`MigrationBlocked` saying so. Each blocked attempt is
    one ``revision.blocked`` warning. A signal during ``sleep`` raises Interrupted:
    nothing is in flight then."""
    rng = rng or random.Random()
    for attempt in range(1, retries + 1):
        try:
            return run()
        except MigrationBlocked as blocked:
            last = attempt == retries
            delay = None if last else round(policy.delay(attempt, rng), 3)
            log.warning(
                "revision.blocked",
                revision=blocked.fields.get("revision"),
                attempt=attempt,
                blockers=blocked.fields.get("blockers"),
                next_delay_s=delay,
            )
            if last:
                raise MigrationBlocked(
                    f"{blocked.message}. Gave up after {attempt} attempts "
                    "(MIGRATION_DDL_LOCK_RETRIES); the database is at the last revision that "
                    "completed. End or shorten the blocking transaction and run again",
                    attempts=attempt,
                    **blocked.fields,
                ) from None
            sleep(delay)  # type: ignore[arg-type]
    raise AssertionError("retries must be at least 1")
