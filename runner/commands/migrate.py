"""The writing verbs: ``upgrade``, ``downgrade``, ``stamp``. Each resolves its target once,
plans (:mod:`runner.plan`), logs the plan, and executes exactly it under the migration
lock (:mod:`runner.execution.run`); each returns a :class:`Result` and fills the run's
:class:`Facts`, or raises a :class:`RunnerError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from runner.commands import from_settings
from runner.config.drivers import require
from runner.config.settings import Settings
from runner.database.session import Session
from runner.errors import DatabaseAhead
from runner.lock.advisory import lock_key
from runner.outcome import Facts, Outcome, Result
from runner.plan import Plan, applied, plan_downgrade, plan_phase, plan_stamp, plan_upgrade
from runner.process.interrupt import Interrupt
from runner.scripts import load as scripts
from runner.scripts import source as sources

if TYPE_CHECKING:
    from runner.observe.logs import Log

Planner = Callable[[tuple[str, ...]], Plan]  # the database's revision -> the plan from there


def upgrade(
    settings: Settings,
    target: str,
    phase: str | None = None,
    *,
    facts: Facts,
    interrupt: Interrupt,
    log: Log,
) -> Result:
    """Bring the database to ``target``: no lock if it is already there; otherwise take the
    lock, read again, and apply what is still pending. ``phase="expand"``: only the pending
    revisions before the first contract one (:func:`runner.plan.plan_phase`)."""
    facts.phase = phase
    require(settings.connection_spec().driver)  # a configuration error comes before anything
    snapshot = from_settings.snapshot(settings)
    known, loaded = sources.scripts_for(
        from_settings.project(settings), settings.migration_manifest, log
    )
    exact = scripts.resolve_exact(known, target)
    if exact is None:  # a prefix, branch or relative target: Alembic resolves (or explains) it
        loaded = loaded or sources.load(from_settings.project(settings), log, known.checksums())
        known = loaded.scripts
    graph, contract = known.graph(), known.contract()
    directory = loaded.directory if loaded else None
    resolved = [exact] if exact is not None else []

    def planner(current: tuple[str, ...]) -> Plan:
        # resolved once, from the revision first read: a relative target (+1) then names the
        # same revisions for a whole herd, and the runners that waited find them applied
        if not resolved:
            resolved.append(scripts.resolve_target(known, directory, target, current))
        return plan_phase(plan_upgrade(current, resolved[0], graph), graph, contract, phase)

    with from_settings.session(settings, facts=facts, log=log) as session:
        current = session.revision()
        sources.verify_checksums(
            known,
            current,
            session.ledger.latest(session.conn),
            strict=settings.migration_strict_checksums,
            log=log,
        )
        settled = _nothing_to_do(session, settings, planner, current, facts, locked=False)
        if settled is not None:
            return Result(settled)
        with from_settings.migration_lock(session, settings, facts=facts, interrupt=interrupt):
            current = session.revision()
            settled = _nothing_to_do(session, settings, planner, current, facts, locked=True)
            if settled is not None:
                return Result(settled)
            if snapshot is not None:  # pending revisions, under the lock, before the first
                facts.snapshot = from_settings.take_snapshot(
                    settings, snapshot, planner(current), interrupt=interrupt, log=log
                )
            # only now Alembic, SQLAlchemy and the revision files: a herd's waiters find the
            # work done under the lock and exit without loading them (the graph came from
            # the manifest); the one that migrates loads them while it holds the lock
            loaded = loaded or sources.load(from_settings.project(settings), log, known.checksums())
            _execute(session, settings, loaded, target, current, planner, facts, interrupt)
    return Result(Outcome.MIGRATED)


def _nothing_to_do(
    session: Session,
    settings: Settings,
    planner: Planner,
    current: tuple[str, ...],
    facts: Facts,
    *,
    locked: bool,
) -> Outcome | None:
    """Whether an upgrade has nothing to do (and why), or None."""
    facts.database_at(current)
    try:
        found = planner(current)
    except DatabaseAhead as ahead:
        if not settings.migration_allow_database_ahead:
            raise
        session.log.warning(
            "upgrade.database_ahead",
            revision=list(current),
            locked=locked,
            detail=ahead.message + " (accepted: MIGRATION_ALLOW_DATABASE_AHEAD)",
        )
        return Outcome.DATABASE_AHEAD
    facts.held = list(found.held)
    if found.up_to_date:
        session.log.info(
            "upgrade.up_to_date",
            revision=list(current),
            locked=locked,
            **({"phase": found.phase, "held": list(found.held)} if found.phase else {}),
        )
        return Outcome.UP_TO_DATE
    return None


def downgrade(
    settings: Settings, target: str, *, facts: Facts, interrupt: Interrupt, log: Log
) -> Result:
    """Roll back to ``target`` (a revision, ``-N`` or ``base``), under the lock."""
    _downgrade_or_stamp(settings, "downgrade", target, facts=facts, interrupt=interrupt, log=log)
    return Result(Outcome.DOWNGRADED)


def stamp(
    settings: Settings, target: str, *, facts: Facts, interrupt: Interrupt, log: Log
) -> Result:
    """Set the version to ``target`` without running migrations, under the lock."""
    _downgrade_or_stamp(settings, "stamp", target, facts=facts, interrupt=interrupt, log=log)
    return Result(Outcome.STAMPED)


def _downgrade_or_stamp(
    settings: Settings, kind: str, target: str, *, facts: Facts, interrupt: Interrupt, log: Log
) -> None:
    require(settings.connection_spec().driver)
    loaded = sources.load(from_settings.project(settings), log)
    graph = loaded.scripts.graph()
    with (
        from_settings.session(settings, facts=facts, log=log) as session,
        from_settings.migration_lock(session, settings, facts=facts, interrupt=interrupt),
    ):
        current = session.revision()
        facts.from_revision = list(current)
        resolved = scripts.resolve_destination(loaded.scripts, loaded.directory, target, current)

        def planner(now: tuple[str, ...]) -> Plan:
            return (
                plan_downgrade(now, resolved, graph)
                if kind == "downgrade"
                else plan_stamp(now, resolved)
            )

        _execute(session, settings, loaded, target, current, planner, facts, interrupt)


def _execute(
    session: Session,
    settings: Settings,
    loaded: scripts.Loaded,
    target: str,
    current: tuple[str, ...],
    planner: Planner,
    facts: Facts,
    interrupt: Interrupt,
) -> None:
    """Plan from ``current`` (read under the lock) and execute; after a revision hit
    ``lock_timeout``, read again, plan again from there, and retry as the lock schedule
    says. One side watch serves every attempt."""
    from runner.execution.alembic_hooks import agree_with_alembic
    from runner.execution.retry import retry_blocked
    from runner.execution.run import Execution, ExecutionContext, schedule_of  # not on no-op

    ledger, log = session.ledger, session.log
    agree_with_alembic(loaded.directory, planner(current), target)  # or refuse, untouched
    adopted = ledger.ensure(
        session.conn, applied(loaded.scripts.graph(), current), loaded.scripts.checksums()
    )
    if adopted or not current:
        log.info("ledger.ready", table=ledger.qualified, adopted=adopted)
    schedule, budget_s = settings.lock_schedule()
    with from_settings.side_watch(session, settings, loaded, schedule, interrupt) as watch:
        ctx = ExecutionContext(
            conn=session.conn,
            loaded=loaded,
            table=session.table,
            schedule=schedule,
            statement_timeout=settings.migration_statement_timeout,
            watch=watch,
            url=session.spec.url(hide_password=False),
            open_connection=session.helper_connection,
            interrupt=interrupt,
            log=log,
            ledger=ledger,
            lock_key=lock_key(settings.lock_name()),
            driver=session.spec.driver,
            backfills=facts.backfills,
            not_rolled_back=facts.not_rolled_back,
        )
        facts.to_revision = None  # unknown while revisions run: never report a stale one
        first = [current]  # read under the lock just now; a retry reads again

        def attempt(attempts: Mapping[str, int]) -> None:
            plan = planner(first.pop() if first else session.revision())
            facts.attempts += 1
            log.info(
                f"{plan.kind}.plan",
                from_revision=list(plan.current),
                target=list(plan.target),
                pending=list(plan.steps),
                **({"phase": plan.phase, "held": list(plan.held)} if plan.phase else {}),
            )
            Execution(ctx, plan, target, lambda step: facts.record(plan.kind, step), attempts).run()

        retry_blocked(
            attempt,
            schedule_for=lambda revision: schedule_of(loaded.scripts, revision, schedule),
            budget_s=budget_s,
            log=log,
        )
    with interrupt.deferred():  # the work is done: a signal now must not hide where it ended
        if session.conn.closed or session.conn.broken:  # env.py discarded it (warned): look again
            session.reconnect()
        facts.to_revision = list(session.revision())
