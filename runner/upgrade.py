"""The ``upgrade`` verb: scripts, database, lock, plan, execution, in that order.

1. load and check the scripts (no database yet);
2. wait for a writable database;
3. read the revision without the lock: already at target means done (most runners stop
   here on an ordinary deploy);
4. check that the session is really ours (not a transaction-mode pooler's), take the
   migration lock, read again (a runner that waited usually finds nothing to do);
5. apply the plan on the locked connection, retrying a revision that hit ``lock_timeout``
   with backoff; release the lock.

The caller owns the :class:`Record`, which this fills in as facts become known, so the
summary is complete whichever step fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from typing import Any

import psycopg

from runner import connect, scripts
from runner.errors import ConfigError, DatabaseAhead, ExitCode, MigrationBlocked, RunnerError
from runner.identity import application_name, where_am_i
from runner.interrupt import Interrupt
from runner.lock import MigrationLock
from runner.migrate import Timeouts, VersionTable, read_revision, run_upgrade
from runner.plan import Plan, plan_upgrade
from runner.settings import Settings

BLOCKED_FIRST_DELAY_S = 1.0
BLOCKED_MAX_DELAY_S = 30.0


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


def blocked_delay(attempt: int, rng: random.Random) -> float:
    """Backoff before retrying a revision that hit lock_timeout: 1, 2, 4 ... 30 s, jittered."""
    return min(BLOCKED_MAX_DELAY_S, BLOCKED_FIRST_DELAY_S * 2 ** (attempt - 1)) * rng.uniform(0.75, 1.25)


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

    name = application_name(where_am_i(settings.ecs_container_metadata_uri_v4))

    def open_connection(role: str) -> psycopg.Connection[Any]:
        return connect.open_session(spec, settings.migration_connect_timeout, f"{name} {role}"[:63])

    def plan(current: tuple[str, ...], locked: bool) -> Plan | None:
        """The plan, or None when there is nothing to do (logged, outcome recorded)."""
        record.from_revision = record.to_revision = list(current)
        try:
            found = plan_upgrade(current, target_heads, graph)
        except DatabaseAhead as ahead:
            if not settings.migration_allow_database_ahead:
                raise
            log.warning("upgrade.database_ahead", revision=list(current), locked=locked,
                        detail=ahead.message + " (accepted: MIGRATION_ALLOW_DATABASE_AHEAD)")
            record.outcome = "database_ahead"
            return None
        if found.up_to_date:
            log.info("upgrade.up_to_date", revision=list(current), locked=locked)
            record.outcome = "up_to_date"
            return None
        return found

    connected = connect.wait_for_database(
        spec, budget_s=settings.migration_db_wait_timeout,
        connect_timeout_s=settings.migration_connect_timeout,
        max_interval_s=settings.migration_retry_max_interval, application_name=name, log=log)
    record.connect_attempts = connected.attempts
    conn = connected.conn
    lock = MigrationLock(conn, settings.lock_name(), log)
    try:
        if plan(read_revision(conn, table), locked=False) is None:
            return
        _require_own_session(conn, open_connection)
        record.lock_wait_ms = lock.acquire(settings.migration_lock_wait_timeout)
        found = plan(read_revision(conn, table), locked=True)
        if found is None:
            return
        log.info("upgrade.plan", from_revision=list(found.current), target=list(found.target),
                 pending=list(found.pending))
        _apply(conn, loaded, target, settings, table, record, interrupt, log, open_connection, spec)
        record.to_revision = list(read_revision(conn, table))
        record.outcome = "migrated"
    finally:
        with interrupt.deferred():
            _finish(conn, lock, table, record)


def _apply(conn: Any, loaded: Any, target: str, settings: Settings, table: VersionTable,
           record: Record, interrupt: Interrupt, log: Any, open_connection: Any, spec: Any) -> None:
    """Run the upgrade, retrying with backoff while a revision hits ``lock_timeout``."""
    timeouts = Timeouts(settings.migration_ddl_lock_timeout, settings.migration_statement_timeout)
    rng = random.Random()
    for attempt in range(1, settings.migration_ddl_lock_retries + 1):
        try:
            run_upgrade(conn, loaded, target, table=table, timeouts=timeouts,
                        url=spec.url(hide_password=False), open_connection=open_connection,
                        interrupt=interrupt, log=log,
                        on_committed=lambda applied: record.applied.append(applied.revision))
            return
        except MigrationBlocked as blocked:
            last = attempt == settings.migration_ddl_lock_retries
            delay = None if last else round(blocked_delay(attempt, rng), 3)
            log.warning("revision.blocked", revision=blocked.fields.get("revision"),
                        attempt=attempt, blockers=blocked.fields.get("blockers"),
                        next_delay_s=delay)
            if last:
                raise MigrationBlocked(
                    f"{blocked.message}. Gave up after {attempt} attempts "
                    "(MIGRATION_DDL_LOCK_RETRIES); the database is at the last revision that "
                    "completed. End or shorten the blocking transaction and run again",
                    attempts=attempt, **blocked.fields) from None
            time.sleep(delay)  # a signal here raises Interrupted: nothing is in flight


def _require_own_session(conn: Any, open_connection: Any) -> None:
    """Refuse a transaction-mode pooler: a session lock there would not protect anything."""
    with contextlib.closing(open_connection("probe")) as probe:
        sticky = connect.session_is_sticky(conn, probe)
    if not sticky:
        raise ConfigError(
            "the database connection goes through a pooler in transaction mode (e.g. PgBouncer "
            "pool_mode=transaction): the migration lock is a session lock and would not be held "
            "by the session that migrates. Point DATABASE_URL/DB_HOST at the database itself (or "
            "a session-mode pool) for migrations", pooler="transaction")


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
