"""The ``upgrade`` verb: scripts, database, lock, plan, execution, in that order.

1. load and check the scripts (no database yet);
2. wait for a writable database;
3. read the revision without the lock: already at target means done (most runners stop
   here on an ordinary deploy);
4. take the migration lock, read again (a runner that waited usually finds nothing to do);
5. apply the plan on the locked connection, release the lock.

The caller owns the :class:`Record`, which this fills in as facts become known, so the
summary is complete whichever step fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import psycopg

from runner import connect, scripts
from runner.errors import ExitCode, RunnerError
from runner.identity import application_name, where_am_i
from runner.interrupt import Interrupt
from runner.lock import MigrationLock
from runner.migrate import VersionTable, read_revision, run_upgrade
from runner.plan import plan_upgrade
from runner.settings import Settings


@dataclasses.dataclass
class Record:
    """What happened, for the one ``summary`` event. ``None`` means never learned."""

    command: str
    outcome: str = "failed"
    from_revision: list[str] | None = None
    to_revision: list[str] | None = None
    applied: list[str] = dataclasses.field(default_factory=list)
    connect_attempts: int = 0
    lock_wait_ms: int | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    exit_code: int = ExitCode.INTERNAL

    def summary(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["total_ms"] = int((time.monotonic() - fields.pop("started")) * 1000)
        return fields


def upgrade(settings: Settings, target: str, *, record: Record, interrupt: Interrupt,
            log: Any) -> None:
    """Bring the database to ``target``. Raises a :class:`RunnerError` on failure."""
    spec = settings.connection_spec()
    loaded = scripts.load(settings.alembic_config)
    target_heads = scripts.resolve_target(loaded.scripts, loaded.directory, target)
    graph = loaded.scripts.graph()
    table = VersionTable(settings.migration_version_table, settings.migration_version_table_schema)
    log.info("scripts.loaded", revisions=len(loaded.scripts.revisions),
             heads=list(loaded.scripts.heads), target=list(target_heads))

    connected = connect.wait_for_database(
        spec, budget_s=settings.migration_db_wait_timeout,
        connect_timeout_s=settings.migration_connect_timeout,
        max_interval_s=settings.migration_retry_max_interval,
        application_name=application_name(where_am_i(settings.ecs_container_metadata_uri_v4)),
        log=log)
    record.connect_attempts = connected.attempts
    conn = connected.conn
    lock = MigrationLock(conn, settings.lock_name(), log)
    try:
        current = read_revision(conn, table)
        record.from_revision = record.to_revision = list(current)
        if plan_upgrade(current, target_heads, graph).up_to_date:
            log.info("upgrade.up_to_date", revision=list(current), locked=False)
            record.outcome = "up_to_date"
            return
        record.lock_wait_ms = lock.acquire(settings.migration_lock_wait_timeout)
        current = read_revision(conn, table)
        record.from_revision = record.to_revision = list(current)
        plan = plan_upgrade(current, target_heads, graph)
        if plan.up_to_date:
            log.info("upgrade.up_to_date", revision=list(current), locked=True)
            record.outcome = "up_to_date"
            return
        log.info("upgrade.plan", from_revision=list(current), target=list(target_heads),
                 pending=list(plan.pending))
        run_upgrade(conn, loaded, target, table=table, interrupt=interrupt, log=log,
                    on_committed=lambda applied: record.applied.append(applied.revision))
        record.to_revision = list(read_revision(conn, table))
        record.outcome = "migrated"
    finally:
        with interrupt.deferred():
            _finish(conn, lock, table, record)


def _finish(conn: Any, lock: MigrationLock, table: VersionTable, record: Record) -> None:
    """Learn the final revision after a failure, release the lock, close the session.

    Never raises over the error that brought us here: if the session is unusable, closing
    it is what releases the lock (PostgreSQL does so when the session ends).
    """
    try:
        if record.outcome == "failed" and lock.session_usable():
            with contextlib.suppress(psycopg.Error, RunnerError):
                record.to_revision = list(read_revision(conn, table))
        lock.release()
    except psycopg.Error as exc:
        lock.log.warning("lock.release_failed", lock=lock.name, error=type(exc).__name__,
                         detail="closing the session; PostgreSQL releases the lock with it")
    finally:
        conn.close()
