"""What a ``revision.progress`` event says, from one sample of the migrating backend
(``pg_stat_activity`` and the ``pg_stat_progress_*`` views) and the sample before it. Pure.

PostgreSQL reports progress for CREATE INDEX [CONCURRENTLY] and REINDEX (``create_index``),
CLUSTER and VACUUM FULL (``cluster``), COPY (``copy``), VACUUM (``vacuum``) and ANALYZE
(``analyze``); each view counts its own units (blocks, tuples, bytes). The percent is of the
current phase, and so is the ETA: it comes from the rate between two samples of the same phase.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: per view: (done, total, unit) column pairs, the first with a total wins
COUNTERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "create_index": (
        ("blocks_done", "blocks_total", "blocks"),
        ("tuples_done", "tuples_total", "tuples"),
        ("lockers_done", "lockers_total", "lockers"),
        ("partitions_done", "partitions_total", "partitions"),
    ),
    "cluster": (("heap_blks_scanned", "heap_blks_total", "blocks"),),
    "copy": (("bytes_processed", "bytes_total", "bytes"),),
    "vacuum": (("heap_blks_scanned", "heap_blks_total", "blocks"),),
    "analyze": (("sample_blks_scanned", "sample_blks_total", "blocks"),),
}


@dataclasses.dataclass(frozen=True)
class Sample:
    """What one look saw: when (monotonic seconds) and the counters of the phase."""

    at: float
    command: str | None = None
    phase: str | None = None
    unit: str | None = None
    done: int | None = None
    total: int | None = None


def sample(row: Mapping[str, Any], at: float) -> Sample:
    """The progress a row reports (its views as JSON objects under their names, None where
    the backend runs no such command, or where the privileges hide it)."""
    for view, counters in COUNTERS.items():
        found = row.get(view)
        if not found:
            continue
        command = found.get("command") or view.replace("_", " ").upper()
        for done, total, unit in counters:
            if found.get(total):
                return Sample(at, command, found.get("phase"), unit, found[done], found[total])
        return Sample(at, command, found.get("phase"))
    return Sample(at)


def eta_s(now: Sample, before: Sample | None) -> float | None:
    """Seconds until the phase's total, at the rate since ``before`` (the same phase of the
    same command); None when unknown."""
    if before is None or now.total is None or now.done is None or before.done is None:
        return None
    same = (now.command, now.phase, now.unit, now.total) == (
        before.command,
        before.phase,
        before.unit,
        before.total,
    )
    rate = (now.done - before.done) / (now.at - before.at) if now.at > before.at else 0
    if not same or rate <= 0:
        return None
    return round((now.total - now.done) / rate, 1)


def fields(row: Mapping[str, Any], now: Sample, before: Sample | None) -> dict[str, Any]:
    """The event's fields: the backend's state and wait, and the command's progress."""
    out: dict[str, Any] = {
        "state": row.get("state") or "hidden: needs pg_read_all_stats",
        "wait_event_type": row.get("wait_event_type"),
        "wait_event": row.get("wait_event"),
        "statement_s": row.get("statement_s"),
    }
    if now.command is not None:
        out.update(command=now.command, phase=now.phase)
    if now.total:
        out.update(
            done=now.done,
            total=now.total,
            unit=now.unit,
            percent=round(100 * (now.done or 0) / now.total, 1),
            eta_s=eta_s(now, before),
        )
    return out
