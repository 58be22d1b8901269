"""Scenario 4, hand-off: from the holder releasing the migration lock to the next waiter
proceeding, median and p95, with N runners queued behind the lock (the rounds of
``lock_handoff.py``, which prints every hand-off; here only the figures).

    uv run --group bench python bench/handoff.py [--smoke]
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from _bench import Bench, Failed, Section, Table, median, p95, standalone
from lock_handoff import RoundFailed, run_round

SIZES = {
    "smoke": {"runners": 3, "rounds": 1, "revisions": 3},
    "full": {"runners": 20, "rounds": 3, "revisions": 3},
}
SIZES["quick"] = dict(SIZES["full"], rounds=1)
TARGET_MS = 10.0


def run(bench: Bench, out: Path, runners: int, rounds: int, revisions: int) -> Section:
    section = Section(f"4. Hand-off: {runners} runners queued behind the lock")
    project = bench.project(revisions)
    log_ms: list[float] = []
    server_ms: list[float] = []
    tries: list[float] = []
    transcript = io.StringIO()
    for r in range(rounds):
        try:
            with contextlib.redirect_stdout(transcript):
                got = run_round(
                    bench.cluster,
                    bench.password,
                    project.ini,
                    runners,
                    r,
                    bench.timeout,
                    True,
                    bench.cache,
                )
        except RoundFailed as exc:
            raise Failed(
                f"hand-off round {r} failed: {exc}\n{transcript.getvalue()[-3000:]}"
            ) from None
        log_ms += [h.latency_ms for h in got.handoffs]
        server_ms += got.server_ms or []
        if got.tries is not None:
            tries.append(got.tries / runners)
    rows = [
        [
            "runners' own log (`lock.released` → next `lock.acquired`)",
            str(len(log_ms)),
            f"{median(log_ms):.1f} ms",
            f"{p95(log_ms):.1f} ms",
            f"{max(log_ms):.1f} ms",
        ]
    ]
    if server_ms:
        rows.append(
            [
                "server's statement log (unlock → successful `pg_try_advisory_lock`)",
                str(len(server_ms)),
                f"{median(server_ms):.1f} ms",
                f"{p95(server_ms):.1f} ms",
                f"{max(server_ms):.1f} ms",
            ]
        )
    section.tables.append(Table(["measured from", "hand-offs", "median", "p95", "max"], rows))
    section.intro = [
        f"{rounds} round(s): the bench holds the lock, starts {runners} runners on a database "
        f"{revisions} steps behind, waits until each logs `lock.waiting`, then releases the "
        "lock as the runner does (unlock and NOTIFY in one statement); the runners then take "
        "it one after another (the first migrates, the others find nothing to do). The log "
        "figures carry each process's scheduling delay between the operation and its log "
        "line (they can even be negative); the server's figures are 1 ms-resolution statement "
        "end times."
    ]
    best = server_ms or log_ms
    section.target(
        f"hand-off median < {TARGET_MS:g} ms ({'server view' if server_ms else 'logs'})",
        f"{median(best):.1f} ms",
        median(best) < TARGET_MS,
    )
    if tries:
        section.notes.append(
            f"`pg_try_advisory_lock` calls per hand-off: {median(tries):.1f} "
            "(every release wakes every waiter; each tries once)"
        )
    section.notes.append(
        "full transcript: `uv run python bench/lock_handoff.py --runners "
        f"{runners} --rounds {rounds}`"
    )
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
