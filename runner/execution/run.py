"""The execution: run a :class:`~runner.plan.Plan` through Alembic's Python API on the
locked connection, and nothing else.

env.py receives the runner's connection in ``config.attributes["connection"]`` (Alembic's
shared-connection pattern) and the database URL in ``sqlalchemy.url``. The runner adds its
defaults to env.py's ``context.configure`` (:mod:`runner.execution.alembic_hooks`). Alembic's own step
list must be the plan's: if it differs, that is a :class:`PlanDiverged` (an internal error),
never a silent divergence.

Every statement of a revision runs under its limits (:mod:`runner.limits`), set on the
migration session only when they change. The ledger rows of a transaction's revisions are
sent with its COMMIT. When migrations run on another connection than the locked one (see
:mod:`runner.execution.connection`), the runner checks that it is on the same database, and
before each revision that the lock session is alive. What the project's code prints becomes
``revision.output`` events (:mod:`runner.execution.output_capture`). A revision's
``backfill()`` (:mod:`runner.execution.backfill`) reports to the execution: its batches run
under the revision's limits, its progress is logged, and the summary lists it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from runner.config.drivers import DRIVERS
from runner.database.ledger import Entry, Ledger, step_entries
from runner.database.version_table import VersionTable
from runner.errors import ExitCode, Interrupted, RunnerError
from runner.execution import alembic_hooks as alembic_env
from runner.execution import backfill as backfills
from runner.execution import connection as migration_connection
from runner.execution.alembic_hooks import alembic_destination, check_steps
from runner.execution.failure import (
    QUERY_CANCELED,
    Where,
    classify_failure,
    kept_fields,
    not_rolled_back,
    sqlstate_of,
)
from runner.execution.output_capture import OutputCapture
from runner.execution.watch import Watch
from runner.limits import LockSchedule, Timeouts, for_attempt, limits_for, parse_schedule
from runner.lock.advisory import guard_key, is_not_held, require_held_sql
from runner.lock.guard import stop_backends_via
from runner.lock.pooler import pooler_error
from runner.observe import descriptors, logs
from runner.plan import Plan
from runner.process.interrupt import Interrupt, reclaimed_warning
from runner.scripts import env_thread
from runner.scripts.load import Loaded, Scripts, set_url

if TYPE_CHECKING:
    from runner.observe.logs import Log

OpenConnection = Callable[[str], psycopg.Connection[Any]]
OUTCOME = {"upgrade": "applied", "downgrade": "reverted", "stamp": "stamped"}  # ledger outcome


def schedule_of(scripts: Scripts, revision: str | None, default: LockSchedule) -> LockSchedule:
    """The lock schedule of ``revision``: its own (``migration_runner["lock_schedule"]``,
    validated when the scripts were loaded), else ``default``."""
    described = scripts.revisions.get(revision) if revision else None
    if described is None or described.lock_schedule is None:
        return default
    return parse_schedule(described.lock_schedule, f"{revision}'s migration_runner lock_schedule")


@dataclasses.dataclass(frozen=True)
class Applied:
    revision: str
    duration_ms: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutionContext:
    """What an execution works with, fixed for its whole run."""

    conn: psycopg.Connection[Any]  # the locked session (autocommit)
    loaded: Loaded
    table: VersionTable
    schedule: LockSchedule  # the run's; a revision may have its own
    statement_timeout: float
    watch: Watch  # the side watch: blockers and progress
    url: str  # a secret: becomes sqlalchemy.url for env.py
    open_connection: OpenConnection
    interrupt: Interrupt
    log: Log
    ledger: Ledger
    lock_key: int | None = None  # the migration lock's (see runner.lock.guard)
    driver: str = "psycopg"  # the driver the URL names: env.py's connection uses it
    #: each ``backfill()`` a revision ran (the summary's, updated in place)
    backfills: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: what a failed or stopped revision committed of itself (the summary's, filled in place)
    not_rolled_back: dict[str, Any] = dataclasses.field(default_factory=dict)


class Execution:
    """One attempt at a plan. :meth:`run` returns the steps committed; ``on_committed``
    hears of each as soon as its commit succeeded.

    Raises, after the failing revision's transaction was rolled back (revisions committed
    before it stay): what :func:`runner.execution.failure.classify_failure` makes of the error, or
    Interrupted after a signal. ``ctx.conn`` is back in autocommit mode on return, unless
    the session was lost. Each step is recorded in the ledger by the commit that applied it.
    """

    def __init__(
        self,
        ctx: ExecutionContext,
        plan: Plan,
        target: str,
        on_committed: Callable[[Applied], None],
        attempts: Mapping[str, int] | None = None,
    ) -> None:
        self.ctx, self.plan, self.target, self.on_committed = ctx, plan, target, on_committed
        self.attempts = attempts or {}  # a blocked revision's attempt (see runner.execution.retry)
        self.outcome = OUTCOME[plan.kind]
        # once per run: rebuilding either for every revision made a run of N cost N^2
        self.checksums = ctx.loaded.scripts.checksums()
        self.graph = ctx.loaded.scripts.graph()
        self.committed: list[Applied] = []
        self.awaiting: list[Applied] = []  # completed, commit not yet seen
        self.unwritten: list[Entry] = []  # ledger rows, written with the commit
        self.env_py_connections: list[psycopg.Connection[Any]] = []  # env.py's own sessions
        self.driver = DRIVERS[ctx.driver]
        self.migrating: migration_connection.Migrating | None = None
        self.migration: Any = None  # the SQLAlchemy connection migrations run on
        self.revision: str | None = None  # in flight
        self.started = 0  # revisions started (none yet: a failure is env.py's)
        self.limits: Timeouts | None = None  # the revision in flight's
        self.once_limits: Timeouts | None = None  # its statements that cannot be retried
        self.session_limits: Timeouts | None = None  # in effect on the migration session
        self.autocommit_in: str | None = None  # the revision that ran an autocommit block
        #: the revision in flight's statements: (SQL, whether it runs outside a transaction)
        self.statements: list[tuple[str, bool]] = []
        self.committed_at_block = 0  # how many of them Alembic committed entering the block
        self.clock, self.wall = time.monotonic(), datetime.now(UTC)
        self.locked_conn_handed_out = False  # our session handed to env.py
        self.engine: Any = None  # the migration engine (a SQLAlchemy Engine once running)
        self.backfilling: dict[str, Any] | None = None  # the backfill whose batches run
        self.backfills: list[dict[str, Any]] = []  # each backfill() of this attempt
        self.statement_began = 0.0  # the migration's last statement (time.monotonic)

    # --- the run ------------------------------------------------------------------------

    def run(self) -> list[Applied]:
        ctx = self.ctx
        ctx.conn.autocommit = self.driver.name != "psycopg"  # handed to env.py: Alembic commits
        set_url(ctx.loaded.config, ctx.url)
        self.engine = migration_connection.engine_for(self.driver, ctx.url, self._creator)
        alembic_env.listen(self.engine, self._listeners())
        try:
            with ctx.interrupt.cancelling(
                lambda: (
                    self.migrating.cancel if self.migrating else ctx.conn.cancel_safe
                )(),  # ours only
                self._stop_backends,
            ):
                env_thread.call_in(
                    ctx.loaded.env_py_thread,
                    lambda: migration_connection.run(self.driver, self._run_env),
                )
            self._flush()
            self._note_discarded_session()
        except BaseException as exc:  # a revision's sys.exit() or KeyboardInterrupt too
            if ctx.interrupt.requested:
                raise self._interrupted(exc) from None
            raise self._failure(exc) from None
        finally:
            self._close()
        return self.committed

    def _note_discarded_session(self) -> None:
        """env.py returned, every step's commit seen, but the locked session is gone: env.py
        discarded it (``connection.invalidate()``, ``close()``) after migrating, or it was
        lost just then. What was applied stays applied: a warning, not a failure; the lock
        went with the session."""
        conn = self.ctx.conn
        if conn.closed or conn.broken:
            self.ctx.log.warning(
                "migrate.connection_discarded",
                applied=[done.revision for done in self.committed],
                message="the runner's session (the locked one, lent to env.py) ended after "
                "env.py returned with every revision committed and recorded: env.py discarded "
                "its connection after migrating (connection.invalidate() or close()); the "
                "migration lock was released with the session. Let the runner close it",
            )

    def _run_env(self) -> None:
        """env.py, run by Alembic with the runner's connection and hooks, its output captured."""
        from alembic.runtime.environment import EnvironmentContext

        loaded = self.ctx.loaded
        env = EnvironmentContext(
            loaded.config,
            loaded.directory,
            fn=self._steps,
            as_sql=False,
            starting_rev=None,
            tag=None,
            destination_rev=alembic_destination(self.plan, self.target),
        )
        with (
            OutputCapture(self.ctx.log, lambda: self.revision).active(),
            migration_connection.lent(self.engine) as sa_conn,
        ):
            env.configure = alembic_env.with_runner_defaults(  # type: ignore[method-assign]
                env.configure,
                self.ctx.table,
                self._on_apply,
                lambda c: self._on_configure(c, sa_conn),
                self.ctx.ledger.name,
            )
            loaded.config.attributes["connection"] = sa_conn
            with env, backfills.hosted(self), descriptors.captured():
                loaded.directory.run_env()
            if sa_conn.in_transaction():
                sa_conn.commit()  # e.g. env.py without per-revision transactions

    def _interrupted(self, exc: BaseException) -> Interrupted:
        """The signal's error; for a revision in flight that committed part of itself (an
        autocommit block, a backfill's batches), saying what stays instead of "rolled back"."""
        error = self.ctx.interrupt.error()
        if self.revision is None or self.revision != self.autocommit_in:
            return error
        where = self._where(self.revision, exc)
        return type(error)(
            f"stopped by {error.fields.get('signal') or 'a failed write'} during revision {self.revision}; the "
            f"migration lock was released. {not_rolled_back(where)}",
            **error.fields,
            **kept_fields(where),
        )

    # --- what backfill() calls (runner.execution.backfill.Host) -------------------------

    @contextlib.contextmanager
    def batches(self, record: dict[str, Any]) -> Iterator[None]:
        self.ctx.backfills.append(record)
        self.backfills.append(record)
        self.backfilling = record
        record["revision"] = self.revision
        self.ctx.log.info("backfill.started", revision=self.revision, table=record["table"])
        try:
            yield
        finally:
            self.backfilling = None

    def progress(self, fields: dict[str, Any]) -> None:
        self.ctx.log.info("backfill.progress", revision=self.revision, **fields)

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.ctx.interrupt.requested and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _failure(self, exc: BaseException) -> RunnerError:
        guard = self.migrating.guard if self.migrating else None
        if guard is not None and guard.lost:
            return guard.error(self.revision)
        steps = self.plan.steps
        started = self.started or self.plan.kind == "stamp"  # else env.py's: no revision
        failed = self.revision or (
            steps[len(self.committed)] if started and len(self.committed) < len(steps) else None
        )
        blockers = self.ctx.watch.seen_since(self.statement_began)
        where = dataclasses.replace(
            self._where(failed, exc), server_statement_timeout=self._server_statement_timeout(exc)
        )
        error = classify_failure(exc, where, blockers)
        if self.limits is not None and error.exit_code == ExitCode.MIGRATION_BLOCKED:
            error.fields["lock_timeout_s"] = self.limits.lock_timeout
        if error.exit_code == ExitCode.INTERNAL:
            self.ctx.log.debug("internal.traceback", exc_info=exc)
        return error

    def _server_statement_timeout(self, exc: BaseException) -> str | None:
        """For a cancelled statement the runner set no statement_timeout for: the one in
        effect (the role's or the database's), else None."""
        runner_set = self.session_limits is not None and self.session_limits.statement_timeout
        conn = self.ctx.conn
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if runner_set or sqlstate_of(exc) != QUERY_CANCELED or not idle:
            return None
        try:
            row = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
            if not conn.autocommit:
                conn.rollback()  # as it was: no transaction open
        except psycopg.Error:
            return None
        return str(row[0]) if row and row[0] not in ("0", "") else None

    def _where(self, failed: str | None, exc: BaseException) -> Where:
        """Where ``exc`` ended the run: the revision in flight (``failed``) and, when it ran
        an autocommit block or a backfill, what of it committed (recorded for the summary)."""
        rev = self.ctx.loaded.scripts.revisions.get(failed) if failed else None
        conn = self.ctx.conn
        in_block = failed is not None and failed == self.autocommit_in
        where = Where(
            failed,
            rev.path if rev else None,
            conn.closed or conn.broken,
            in_block,
            # nothing started yet (a stamp starts no revision): the failure is env.py's
            env_py=None
            if self.started or self.plan.kind == "stamp"
            else self.ctx.loaded.directory.env_py_location,
            backfills=tuple(b for b in self.backfills if b.get("revision") == failed),
            kind=self.plan.kind,
            rolled_back_with=tuple(a.revision for a in self.awaiting if a.revision != failed),
        )
        if not in_block:
            return where
        committed, left, rolled_back = self._committed_and_left(exc)
        where = dataclasses.replace(where, committed=committed, left=left, rolled_back=rolled_back)
        self.ctx.not_rolled_back.update(
            revision=failed,
            direction=self.plan.kind,
            committed_statements=list(where.committed),
            backfills=kept_fields(where)["backfills_kept"],
        )
        return where

    def _committed_and_left(
        self, exc: BaseException
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """The failed revision's statements that committed (those before its autocommit
        block, and those of the block but the one that failed; a backfill's batches are its
        record's), the INVALID indexes the database now has (a failed CREATE INDEX
        CONCURRENTLY leaves one), and the statements of its open transaction (rolled back)."""
        failed_statement = sqlstate_of(exc) is not None and self.statements[-1:]
        done = self.statements[: -1 if failed_statement else None]
        committed = [
            sql for i, (sql, outside) in enumerate(done) if outside or i < self.committed_at_block
        ]
        rolled_back = [
            sql
            for i, (sql, outside) in enumerate(self.statements)
            if not outside and i >= self.committed_at_block
        ]
        left: list[str] = []
        with contextlib.suppress(Exception):  # the session may be gone: say what we know
            with self.ctx.open_connection("inspect") as side:
                left = [
                    f"INVALID index {name}"
                    for (name,) in side.execute(
                        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
                    )
                ]
        return tuple(committed), tuple(left), tuple(rolled_back)

    def _close(self) -> None:
        conn = self.ctx.conn
        self.ctx.loaded.config.attributes.pop("connection", None)
        self.ctx.watch.track(None)
        self.ctx.watch.follow(None)
        if self.migrating is not None:
            self.migrating.close()
        for other in self.env_py_connections:
            other.close()
        if not conn.closed and not conn.broken:
            conn.rollback()
            conn.autocommit = True

    def _flush(self) -> None:
        """Report the steps whose commit succeeded."""
        for done in self.awaiting:
            self.committed.append(done)
            self.on_committed(done)
            rev = self.ctx.loaded.scripts.revisions.get(done.revision)
            self.ctx.log.info(
                f"revision.{self.outcome}",
                revision=done.revision,
                duration_ms=done.duration_ms,
                message=rev.message if rev else None,
            )
        self.awaiting.clear()

    def _creator(self) -> Any:
        """Our locked connection first; further ones (env.py's) are new sessions."""
        if not self.locked_conn_handed_out:
            self.locked_conn_handed_out = True
            return self.ctx.conn
        self.env_py_connections.append(self.ctx.open_connection("env.py"))
        self.env_py_connections[-1].autocommit = False
        return self.env_py_connections[-1]

    # --- what Alembic calls -------------------------------------------------------------

    def _steps(self, heads: Any, _context: Any) -> list[Any]:
        found = alembic_env.alembic_steps(
            self.ctx.loaded.directory,
            self.plan.kind,
            alembic_destination(self.plan, self.target),
            heads,
        )
        ordered = check_steps(self.plan, found)
        if self.plan.kind == "stamp":
            return ordered
        return [alembic_env.StepWithHook(step, self._before_revision) for step in ordered]

    def _before_revision(self, step: Any) -> None:
        revision = step.revision.revision
        self._reclaim_signals()
        if self.migrating is not None and self.migrating.separate:
            migration_connection.check_lock_session(self.ctx.conn, revision)
        described = self.ctx.loaded.scripts.revisions[revision]
        schedule = schedule_of(self.ctx.loaded.scripts, revision, self.ctx.schedule)
        attempt = self.attempts.get(revision, 1)
        self.started += 1
        self.revision = revision
        self.statements, self.committed_at_block = [], 0
        self.limits, self.once_limits = for_attempt(
            schedule, attempt, self.ctx.statement_timeout, described.options
        )
        self.ctx.log.info(
            "revision.started",
            revision=revision,
            message=described.message,
            attempt=attempt,
            lock_timeout_s=self.limits.lock_timeout,
            statement_timeout_s=self.limits.statement_timeout,
        )
        self.clock, self.wall = time.monotonic(), datetime.now(UTC)
        self.ctx.watch.track(revision)

    def _on_apply(self, *, step: Any, **_kw: Any) -> None:
        """Inside the step's transaction: its ledger rows are written with its commit."""
        self.revision = None
        self.ctx.watch.track(None)
        duration = int((time.monotonic() - self.clock) * 1000)
        entries, name = step_entries(
            self.outcome, step, self.graph, self.checksums, self.wall, duration
        )
        self.unwritten.extend(entries)
        self.awaiting.append(Applied(name, duration))

    def _on_configure(self, connection: Any, handed: Any) -> None:
        """env.py chose its connection: check it, learn the mode, how to cancel, watch it."""
        migration = connection if connection is not None else handed
        self.migration = migration
        self._reclaim_signals()  # env.py and what it imported have run
        separate = self.driver.name != "psycopg" or migration is not handed
        logs.install_stdlib_bridge()  # env.py may have run logging.config.fileConfig
        self.migrating = migrating = migration_connection.adopt(
            migration, self.ctx.conn, separate, self.ctx.open_connection, self.ctx.lock_key
        )
        if migration.engine is not self.engine:  # env.py's own engine: watch it too
            alembic_env.listen(migration, self._listeners())
        self.ctx.watch.follow(migrating.pid)
        self.ctx.log.info(
            "migrate.mode",
            mode="separate_connection" if separate else "locked_connection",
            migration_backend_pid=migrating.pid,
            detail=(
                f"migrations run on a {self.driver.name} connection of their own; the lock is held "
                "alongside and checked before each revision"
                if separate
                else "migrations run on the locked connection"
            ),
        )

    def _stop_backends(self) -> None:
        """The last resort after a signal (see :mod:`runner.process.interrupt`)."""
        stop_backends_via(
            self.ctx.open_connection,
            [self.migrating.pid if self.migrating else None, self.ctx.conn.info.backend_pid],
        )

    # --- SQLAlchemy events --------------------------------------------------------------

    def _listeners(self) -> dict[str, Callable[..., Any]]:
        return {
            "begin": lambda _c: self._flush(),  # a transaction begins: the last committed
            "set_connection_execution_options": self._on_options,
            "commit": self._on_commit,
            "before_cursor_execute": self._before_statement,
        }

    def _on_options(self, _connection: Any, options: Any) -> None:
        if options.get("isolation_level") == "AUTOCOMMIT" and self.revision:
            self.autocommit_in = self.revision
            self.committed_at_block = len(self.statements)  # Alembic commits them first

    def _before_statement(
        self, connection: Any, cursor: Any, statement: Any = "", *_args: Any
    ) -> None:
        """Raise a pending signal; set the session's limits when the statement needs others
        than those in effect (rarely: at the first revision, around overrides and
        autocommit blocks). Straight to the driver: SQLAlchemy's statement machinery costs
        more than the statement."""
        self._reclaim_signals()
        self.ctx.interrupt.check()
        if connection is not self.migration:
            return
        self.statement_began = time.monotonic()  # blockers seen before it were another's
        dbapi = connection.connection.dbapi_connection
        if self.revision and self.backfilling is None:  # a backfill's batches: its record
            self.statements.append((str(statement), bool(dbapi.autocommit)))
        # a backfill's batches run in autocommit mode, each under the revision's limits;
        # what follows a revision's autocommit block cannot be retried: the largest
        autocommit = dbapi.autocommit and self.backfilling is None
        after_block = self.autocommit_in == self.revision and self.backfilling is None
        once = self.once_limits if after_block else None
        wanted = limits_for(self.limits if self.revision else None, autocommit, once)
        if wanted is not None and wanted != self.session_limits:
            dbapi.cursor().execute(wanted.statement())
            # inside a transaction the setting reverts if it rolls back: and so does the run
            self.session_limits = wanted

    def _reclaim_signals(self) -> None:
        """Take the stop signals back from project code that replaced their handlers (see
        :meth:`~runner.process.interrupt.Interrupt.reclaim`), and say so."""
        replaced = self.ctx.interrupt.reclaim()
        if replaced:
            self.ctx.log.warning(
                "signals.reclaimed", revision=self.revision, **reclaimed_warning(replaced)
            )

    def _lock_check(self) -> str | None:
        """The statement a transaction of the migration runs before its COMMIT: it fails
        unless its own server session holds the migration lock (the locked session) or its
        guard key (env.py's own connection) (see :func:`~runner.lock.advisory.require_held_sql`);
        None when there is no lock to check."""
        migrating, key = self.migrating, self.ctx.lock_key
        if key is None or migrating is None or (migrating.separate and migrating.guard is None):
            return None
        return require_held_sql(guard_key(key) if migrating.separate else key)

    def _on_commit(self, connection: Any) -> None:
        """Before a transaction of the migration commits: the lock check, then the ledger
        rows of the steps it applied, and the COMMIT, in one message where the driver can
        (the driver's own commit then finds nothing left to commit), else just before it
        (reported at the next transaction's begin). A failed check is
        :func:`~runner.lock.pooler.pooler_error` and the transaction rolls back: whatever the
        timing, a pooler in transaction mode can never commit a revision without the lock."""
        if connection is not self.migration:
            return
        dbapi, check = connection.connection.dbapi_connection, self._lock_check()
        pipelined = (
            bool(self.unwritten) and self.driver.name in migration_connection.PIPELINES_COMMIT
        )
        try:
            if pipelined:
                self.ctx.ledger.write_and_commit(dbapi, self.unwritten, check)
            else:
                if check is not None:
                    dbapi.cursor().execute(check)
                if self.unwritten:
                    self.ctx.ledger.write(dbapi, self.unwritten)
        except Exception as exc:
            if is_not_held(exc):
                raise pooler_error(
                    "a revision's transaction ran on a server session that does not hold the "
                    "migration lock; it was rolled back before its COMMIT"
                ) from None
            raise
        self.unwritten.clear()
        if pipelined:
            self._flush()
