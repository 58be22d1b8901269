"""``backfill()``: populate a column in key-ordered batches, each its own short transaction,
from inside a revision's ``upgrade()`` (see docs/zero-downtime.md)::

    from runner import backfill

    def upgrade():
        backfill("calls", set="new_name = old_name", where="new_name IS NULL", key="id")

The contract:

- What the revision did before the call is committed first (Alembic's ``autocommit_block``):
  the DDL's locks are released before the first batch. Each batch is one ``UPDATE`` of at
  most ``batch_size`` rows, in ``key`` order, committed on its own, under the revision's
  ``lock_timeout`` and ``statement_timeout``: a writer waits for one batch at most.
- ``where`` must say which rows are left (and stop matching a row once it is done): it is
  how a later run finds where to continue. Within a run, batches also move forward by key.
- The revision counts as applied (its version row, its ledger row) only when its
  ``upgrade()`` returned, so after the backfill finished. Stopped before (SIGTERM: exit 130;
  a failed batch, a lost session: exit 6), the batches done stay committed and the revision
  stays pending: the next run calls ``upgrade()`` again, which must therefore be safe to
  run again. Keep the backfill in a revision of its own (the guide's "Migration 2"), or make
  what comes before it idempotent (``ADD COLUMN IF NOT EXISTS``).
- The runner's migration lock is held throughout: a herd's waiters wait for the whole
  backfill (MIGRATION_LOCK_WAIT_TIMEOUT must cover it).
- Rendered offline (``migration-runner sql``, ``lint``), it is the single ``UPDATE`` it
  stands for.

Under the runner, progress is logged as ``backfill.progress`` events (at most one per
``PROGRESS_EVERY_S``; the rows left from the planner's estimate, or, for a table without
statistics, a count bounded by ``COUNT_BOUND``, else unknown: ``rows_estimate_source``) and the run's summary lists each backfill; under plain ``alembic`` it
runs the same batches silently.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol

from runner.errors import MigrationFailed

PROGRESS_EVERY_S = 1.0
#: without statistics the rows to do are counted, up to this many (one bounded scan);
#: beyond it the total is reported as unknown
COUNT_BOUND = 100_000
_IDENTIFIER = re.compile(r'^(?:[A-Za-z_][\w$]*|"[^"]+")(?:\.(?:[A-Za-z_][\w$]*|"[^"]+"))?$')


class Host(Protocol):
    """What the runner's execution offers a backfill (:class:`runner.execution.run.Execution`)."""

    def batches(self, record: dict[str, Any]) -> Any:
        """A context manager around the batches: the revision's limits apply although the
        session is in autocommit mode; ``record`` (updated in place) is the summary's."""

    def progress(self, fields: dict[str, Any]) -> None: ...

    def pause(self, seconds: float) -> None:
        """Sleep, ending early (the next statement raises) on a signal."""


_host: Host | None = None


@contextmanager
def hosted(host: Host) -> Iterator[None]:
    """While inside, ``backfill()`` reports to ``host``."""
    global _host
    saved, _host = _host, host
    try:
        yield
    finally:
        _host = saved


@dataclasses.dataclass(frozen=True)
class Batches:
    """The statements of one backfill. Pure."""

    table: str
    set: str
    where: str
    key: str
    batch_size: int

    def __post_init__(self) -> None:
        """Raises :class:`MigrationFailed` (the revision's mistake, exit 6) for a bad
        argument, before anything runs."""
        for name in ("table", "key", "set", "where"):
            if not isinstance(getattr(self, name), str):
                raise MigrationFailed(
                    f"backfill(...): {name} must be a string, not "
                    f"{type(getattr(self, name)).__name__}; nothing was run"
                )
        for name in ("table", "key"):
            if not _IDENTIFIER.match(getattr(self, name)):
                raise MigrationFailed(
                    f"backfill({self.table!r}, ...): {name} {getattr(self, name)!r} is not a "
                    "table or column name; nothing was run"
                )
        for name in ("set", "where"):  # one expression each: never a second statement
            if ";" in re.sub(r"'(?:[^']|'')*'", "", getattr(self, name)):
                raise MigrationFailed(
                    f"backfill({self.table!r}, ...): {name} must be one SQL expression, "
                    "without ';'; nothing was run"
                )
        if not self.set.strip() or not self.where.strip():
            raise MigrationFailed(
                f"backfill({self.table!r}, ...): set and where are required (where: the rows "
                "still to do); nothing was run"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise MigrationFailed(
                f"backfill({self.table!r}, ...): batch_size must be a whole number of rows, "
                "at least 1; nothing was run"
            )

    def statement(self, first: bool) -> str:
        """One batch, as SQLAlchemy ``text()``: how many rows it updated and the last key it
        covered (NULL: none left). ``first``: no key bound yet. The caller's fragments are
        SQL as written: their colons are escaped, so ``'12:30'`` or ``x::text`` is never
        taken for a bind parameter; ``:after`` is the only one."""
        after = "" if first else f" AND {self.key} > :after"
        where, set_ = _escape_colons(self.where), _escape_colons(self.set)
        table, key = _escape_colons(self.table), _escape_colons(self.key)
        return (
            f"WITH batch AS (SELECT {key} AS backfill_key FROM {table} "
            f"WHERE ({where}){after} ORDER BY {key} LIMIT {self.batch_size}), "
            f"done AS (UPDATE {table} SET {set_} FROM batch "
            f"WHERE {table}.{key} = batch.backfill_key AND ({where}) RETURNING 1) "
            "SELECT (SELECT count(*) FROM done), (SELECT max(backfill_key) FROM batch)"
        )

    def unreachable(self) -> str:
        """The rows still to do that a walk by key never reaches: a NULL key."""
        return _escape_colons(
            f"SELECT count(*) FROM {self.table} WHERE ({self.where}) AND {self.key} IS NULL"
        )

    def estimate(self) -> str:
        return _escape_colons(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self.table} WHERE ({self.where})"
        )

    def statistics(self) -> str:
        """The table's ``reltuples``: below 0 never analyzed (or a partitioned parent), 0
        analyzed while empty; either way the planner's estimate is a guess."""
        return "SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)"

    def bounded_count(self, bound: int) -> str:
        """The rows still to do, counted up to ``bound + 1``."""
        return _escape_colons(
            f"SELECT count(*) FROM (SELECT 1 FROM {self.table} WHERE ({self.where}) "
            f"LIMIT {bound + 1}) AS todo"
        )

    def offline(self) -> str:
        return f"UPDATE {self.table} SET {self.set} WHERE {self.where}"


def _estimate(bind: Any, batches: Batches) -> tuple[int | None, str]:
    """The rows to do at the start, and where that number comes from: the planner's
    estimate when the table has statistics; without them (a fresh table, never ANALYZEd:
    the planner guesses a handful of rows) a bounded count, else unknown."""
    from sqlalchemy import text

    reltuples = bind.execute(text(batches.statistics()), {"table": batches.table}).scalar()
    if reltuples is not None and reltuples > 0:
        plan = bind.execute(text(batches.estimate())).scalar()
        plan = json.loads(plan) if isinstance(plan, str) else plan  # asyncpg: the JSON text
        return int(plan[0]["Plan"]["Plan Rows"]), "planner"
    counted = bind.execute(text(batches.bounded_count(COUNT_BOUND))).scalar()
    source = estimate_source(reltuples, counted, COUNT_BOUND)
    return (counted if source == "counted" else None), source


def _escape_colons(sql: str) -> str:
    return sql.replace(":", "\\:")


def progress(
    table: str,
    done: int,
    estimated: int | None,
    batches: int,
    elapsed_s: float,
    source: str = "planner",
) -> dict[str, Any]:
    """A ``backfill.progress`` event's fields. ``estimated``: the rows expected to match at
    the start (None: unknown, then no rows left and no ETA are claimed); ``source``: where
    that number came from (:func:`estimate_source`). Pure."""
    left = None if estimated is None else max(estimated - done, 0)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    return {
        "table": table,
        "rows_done": done,
        "rows_left_estimate": left,
        "rows_estimate_source": source,
        "batches": batches,
        "rows_per_s": round(rate),
        "eta_s": round(left / rate, 1) if rate > 0 and left is not None else None,
        "elapsed_s": round(elapsed_s, 1),
    }


def estimate_source(reltuples: float | None, counted: int | None, bound: int) -> str:
    """Which estimate a backfill reports: ``planner`` when the table has statistics
    (``reltuples`` > 0), else ``counted`` (a count of the rows to do, at most ``bound``) or
    ``unknown`` (more than ``bound``: the total is not reported). Pure."""
    if reltuples is not None and reltuples > 0:
        return "planner"
    return "counted" if counted is not None and counted <= bound else "unknown"


def backfill(
    table: str,
    set: str,  # the SQL keyword it stands for
    where: str,
    key: str = "id",
    batch_size: int = 1000,
    pause: float = 0.0,
) -> dict[str, Any]:
    """Run the backfill (see the module's contract); its final progress (rows done ...).
    Raises :class:`MigrationFailed` for a bad argument, and whatever a batch raised."""
    from alembic import op

    batches = Batches(table, set, where, key, batch_size)
    context = op.get_context()
    if context.as_sql:
        op.execute(_escape_colons(batches.offline()))  # Alembic makes a text() of it
        return {"table": table, "offline": True}
    record: dict[str, Any] = {"table": table, "rows_done": 0, "finished": False}
    with context.autocommit_block(), _host.batches(record) if _host else nullcontext():
        return _run(op.get_bind(), batches, record, pause)


def _run(bind: Any, batches: Batches, record: dict[str, Any], pause: float) -> dict[str, Any]:
    from sqlalchemy import text

    started = last_report = time.monotonic()
    estimated, source = _estimate(bind, batches)
    report: Callable[[dict[str, Any]], None] = _host.progress if _host else (lambda _f: None)
    done, count, after, slowest = 0, 0, None, 0.0
    first, rest = text(batches.statement(True)), text(batches.statement(False))
    while True:
        began = time.monotonic()
        updated, last = bind.execute(first if after is None else rest, {"after": after}).one()
        slowest = max(slowest, time.monotonic() - began)
        count += 1
        done += updated
        record.update(rows_done=done, batches=count, batch_ms_max=round(slowest * 1000))
        if last is None:
            break
        after = last
        now = time.monotonic()
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            report(progress(batches.table, done, estimated, count, now - started, source))
        if pause > 0 and _host is not None:
            _host.pause(pause)
        elif pause > 0:
            time.sleep(pause)
    missed = bind.execute(text(batches.unreachable())).scalar()
    if missed:  # never report finished with rows left: the revision is not applied
        raise MigrationFailed(
            f"backfill({batches.table!r}, ...): {missed} row(s) still to do have a NULL "
            f"{batches.key}, which a walk by key never reaches (the key must be NOT NULL and "
            "unique, e.g. the primary key); the batches done stay committed"
        )
    final = progress(batches.table, done, done, count, time.monotonic() - started, source)
    record.update(finished=True, duration_s=final["elapsed_s"])
    report({**final, "finished": True})
    return final
