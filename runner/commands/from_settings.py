"""Where the settings stop: the values the lower layers receive, decided from the settings
once, here. Below the command layer nothing reads :class:`~runner.config.settings.Settings`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner import __version__
from runner.config.settings import Settings
from runner.database.ledger import Ledger
from runner.database.session import Reach, Session, database_session
from runner.database.version_table import VersionTable
from runner.limits import LockSchedule, for_attempt, watch_every
from runner.lock.advisory import MigrationLock
from runner.lock.holding import migration_lock as hold
from runner.observe.identity import ran_on, where_am_i
from runner.outcome import Facts
from runner.process.interrupt import Interrupt
from runner.scripts.alembic_config import Project

if TYPE_CHECKING:
    from runner.observe.logs import Log


def reach(settings: Settings) -> Reach:
    return Reach(
        settings.connection_spec(),
        settings.migration_db_wait_timeout,
        settings.migration_connect_timeout,
        settings.migration_retry_max_interval,
        where_am_i(settings.ecs_container_metadata_uri_v4),
    )


def project(settings: Settings) -> Project:
    """Where the project's migrations are and how they start."""
    return Project(
        settings.alembic_config,
        settings.migration_script_location,
        settings.migration_version_locations,
        settings.migration_bootstrap,
        settings.migration_env_py_thread,
    )


def version_table(settings: Settings) -> VersionTable:
    return VersionTable(settings.migration_version_table, settings.migration_version_table_schema)


def ledger(settings: Settings) -> Ledger:
    return Ledger(
        settings.migration_ledger_table,
        settings.migration_version_table_schema,
        __version__,
        ran_on(settings.ecs_container_metadata_uri_v4),
    )


def session(
    settings: Settings, *, facts: Facts, log: Log
) -> contextlib.AbstractContextManager[Session]:
    """:func:`~runner.database.session.database_session` as the settings say."""
    return database_session(
        reach(settings), version_table(settings), ledger(settings), facts=facts, log=log
    )


def migration_lock(
    session: Session, settings: Settings, *, facts: Facts, interrupt: Interrupt
) -> contextlib.AbstractContextManager[MigrationLock]:
    """:func:`~runner.lock.holding.migration_lock` as the settings say."""
    return hold(
        session,
        settings.lock_name(),
        settings.migration_lock_wait_timeout,
        settings.migration_pooler,
        facts=facts,
        interrupt=interrupt,
    )


@contextlib.contextmanager
def side_watch(
    session: Session, settings: Settings, loaded: Any, schedule: LockSchedule, interrupt: Interrupt
) -> Iterator[Any]:
    """The side watch of a run (:class:`~runner.execution.watch.Watch`): it looks for lock
    waits as often as the shortest first lock_timeout needs (not at all when no revision has
    one), and reports progress every MIGRATION_PROGRESS_INTERVAL (0: never). Stopped on exit,
    so that no progress event follows the run's end; silent once a signal arrived."""
    from runner.execution.run import schedule_of
    from runner.execution.watch import Watch

    firsts = [
        for_attempt(schedule_of(loaded.scripts, rev.id, schedule), 1, 0.0, rev.options)[0]
        for rev in loaded.scripts.revisions.values()
    ]
    looks = any(limits.lock_timeout > 0 for limits in firsts)

    def report(revision: str, elapsed_s: float, fields: dict[str, Any]) -> None:
        if not interrupt.requested:
            session.log.info("revision.progress", revision=revision, elapsed_s=elapsed_s, **fields)

    watch = Watch(
        lambda: session.helper_connection("watch"),
        watch_every(limits.lock_timeout for limits in firsts) if looks else None,
        settings.migration_progress_interval or None,
        report,
    )
    try:
        yield watch
    finally:
        watch.stop()


def snapshot(settings: Settings) -> Any:
    """The snapshot ``MIGRATION_SNAPSHOT*`` ask for before migrating, or None (off). Raises
    :class:`~runner.errors.ConfigError` when the identifier cannot be known."""
    if settings.migration_snapshot == "off":
        return None
    from runner.execution import snapshot as snapshots

    return snapshots.request(
        settings.migration_snapshot,
        settings.migration_snapshot_identifier,
        settings.connection_spec().host,
        settings.migration_snapshot_timeout,
    )


def take_snapshot(
    settings: Settings, wanted: Any, plan: Any, *, interrupt: Interrupt, log: Log
) -> str:
    """Take the snapshot ``wanted`` before applying ``plan``; its name."""
    from datetime import UTC, datetime

    from runner.execution import snapshot as snapshots

    return snapshots.take(
        wanted,
        snapshots.snapshot_name(wanted.identifier, datetime.now(UTC)),
        snapshots.tags(
            plan.current, plan.target, __version__, ran_on(settings.ecs_container_metadata_uri_v4)
        ),
        log=log,
        check=interrupt.check,
    )
