"""The execution: read the database's revision, and run ``alembic upgrade`` through Alembic's
Python API on the locked connection.

env.py receives the runner's connection in ``config.attributes["connection"]`` (Alembic's
shared-connection pattern) and the database URL in ``sqlalchemy.url``. The runner adds its
defaults to env.py's ``context.configure``: one transaction per revision, the configured
version table, and a callback recording each revision as it completes. env.py's explicit
choices win, except a version table that disagrees with the runner's settings (the lock key
and the "already at target" read depend on it).

Every statement of a revision runs under ``lock_timeout`` / ``statement_timeout`` (a
revision may override them with a module-level ``migration_runner = {...}``), except those
in an ``autocommit_block``, which run without; the runner sets them on the migration session
only when they change. The ledger rows of a transaction's revisions are sent with its
COMMIT. When env.py migrates on a connection of its own, the runner checks before each
revision that the session holding the lock is still alive.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from runner import logs
from runner.errors import (ConfigError, ConnectionLost, MigrationBlocked, MigrationFailed,
                           RunnerError, first_line, name_sessions)
from runner.interrupt import Interrupt
from runner.ledger import Entry, Ledger
from runner.scripts import Loaded, set_url

OpenConnection = Callable[[str], psycopg.Connection[Any]]

BLOCKERS_SQL = """
SELECT pid, application_name, host(client_addr) AS client_addr, state,
       round(extract(epoch FROM now() - xact_start))::int AS transaction_open_s,
       CASE WHEN query = '<insufficient privilege>' THEN 'hidden: needs pg_read_all_stats'
            ELSE left(regexp_replace(query, '\\s+', ' ', 'g'), 60) END AS query
FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid
"""


def watch_every(lock_timeouts: Iterable[float]) -> float:
    """How often the blocker watcher samples: five times within the shortest lock_timeout
    in force, but between 0.1 and 1 s (pg_blocking_pids is not free on a busy server)."""
    shortest = min((t for t in lock_timeouts if t > 0), default=5.0)
    return min(1.0, max(0.1, shortest / 5))


@dataclasses.dataclass(frozen=True)
class VersionTable:
    name: str = "alembic_version"
    schema: str | None = None

    def identifier(self) -> sql.Composable:
        parts = (self.schema, self.name) if self.schema else (self.name,)
        return sql.Identifier(*parts)


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Per-statement limits for migration sessions, in seconds; 0 means no limit."""

    lock_timeout: float = 5.0
    statement_timeout: float = 0.0

    def for_revision(self, options: tuple[tuple[str, float], ...]) -> Timeouts:
        return dataclasses.replace(self, **dict(options)) if options else self

    def statement(self) -> str:
        """Session-level, so that they are set once for a run of revisions that share them,
        not once per revision (see :func:`limits_for`)."""
        return (f"SELECT set_config('lock_timeout', '{int(self.lock_timeout * 1000)}', false), "
                f"set_config('statement_timeout', '{int(self.statement_timeout * 1000)}', false)")


NO_LIMITS = Timeouts(0.0, 0.0)


def limits_for(revision_limits: Timeouts | None, autocommit: bool) -> Timeouts | None:
    """The limits a statement on the migration session must run under: the revision's own;
    none in a revision's ``autocommit_block`` (``CREATE INDEX CONCURRENTLY`` waits for old
    transactions without blocking anyone, and one cancelled leaves an INVALID index); no
    opinion (None) outside revisions."""
    if revision_limits is None:
        return None
    return NO_LIMITS if autocommit else revision_limits


@dataclasses.dataclass(frozen=True)
class Applied:
    revision: str
    duration_ms: int


def read_revision(conn: psycopg.Connection[Any], table: VersionTable) -> tuple[str, ...]:
    """The database's current revision(s); ``()`` when the version table does not exist."""
    ident = table.identifier().as_string(conn)
    try:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ident,)).fetchone()
        if not (exists and exists[0]):
            return ()
        rows = conn.execute(sql.SQL("SELECT version_num FROM {}").format(table.identifier())).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(f"DB_USER may not read the version table {ident}: grant it SELECT (and "
                          "the rights the migrations need), or use the migration role") from None
    return tuple(sorted(row[0] for row in rows))


BLOCKED_FIRST_DELAY_S = 1.0
BLOCKED_MAX_DELAY_S = 30.0


def blocked_delay(attempt: int, rng: random.Random) -> float:
    """Backoff before retrying a revision that hit lock_timeout: 1, 2, 4 ... 30 s, jittered."""
    return min(BLOCKED_MAX_DELAY_S, BLOCKED_FIRST_DELAY_S * 2 ** (attempt - 1)) * rng.uniform(0.75, 1.25)


def run_with_retries(run: Callable[[], Any], *, retries: int, log: Any,
                     rng: random.Random | None = None) -> None:
    """Call ``run`` (a :func:`run_steps`), retrying with backoff while a revision hits
    ``lock_timeout``; after ``retries`` attempts raise :class:`MigrationBlocked`."""
    rng = rng or random.Random()
    for attempt in range(1, retries + 1):
        try:
            run()
            return
        except MigrationBlocked as blocked:
            last = attempt == retries
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


class BlockerWatch:
    """Samples, from a session of its own, who blocks the migration session's lock waits,
    so that a ``lock_timeout`` can be reported with the blocker's name. The session is
    opened in the watcher's thread: the migration does not wait for it."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], pid: int,
                 every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.last: list[dict[str, Any]] = []
        self._connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="blocker-watch")
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                while not self._stop.wait(self.every_s):
                    rows = conn.cursor(row_factory=dict_row).execute(BLOCKERS_SQL, (self.pid,)).fetchall()
                    if rows:
                        self.last = rows
        except psycopg.Error:
            return  # only diagnostics: the migration itself reports real trouble

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class _Step:
    """Alembic's migration step, with ``before`` run just before the revision's upgrade()."""

    def __init__(self, step: Any, before: Callable[[Any], None]) -> None:
        self._step, self._before = step, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def __str__(self) -> str:
        return str(self._step)

    @property
    def migration_fn(self) -> Callable[..., Any]:
        fn = self._step.migration_fn

        def run(**kw: Any) -> Any:
            self._before(self._step)
            return fn(**kw)

        return run


def run_steps(conn: psycopg.Connection[Any], loaded: Loaded, kind: str, target: str, *,
              table: VersionTable, timeouts: Timeouts, url: str,
              open_connection: OpenConnection, interrupt: Interrupt, log: Any,
              on_committed: Callable[[Applied], None], ledger: Ledger) -> list[Applied]:
    """Move the database to ``target`` (``kind``: upgrade, downgrade or stamp) and return the
    steps committed; ``on_committed`` hears of each as soon as its commit succeeded.

    Raises, after the failing revision's transaction was rolled back (revisions committed
    before it stay): :class:`MigrationBlocked` when it hit ``lock_timeout`` (retry later),
    :class:`ConnectionLost` when a session died, :class:`Interrupted` after a signal,
    :class:`MigrationFailed` otherwise. ``url`` (a secret) becomes ``sqlalchemy.url`` for
    env.py. ``conn`` is back in autocommit mode on return, unless the session was lost.
    Each step is recorded in ``ledger`` by the commit of the transaction that applied it.
    """
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import create_engine

    directory = loaded.directory
    steps: list[str] = []
    committed: list[Applied] = []
    awaiting: list[Applied] = []  # completed, commit not yet seen
    extra: list[psycopg.Connection[Any]] = []
    state: dict[str, Any] = {"clock": time.monotonic(), "wall": datetime.now(timezone.utc),
                             "watch": None, "mode": None, "revision": None, "limits": None,
                             "session_limits": None,  # in effect on the migration session
                             "migration": None, "lock_session": None, "cancel": conn.cancel_safe}
    unwritten: list[Entry] = []  # ledger rows of applied steps, written just before the commit

    outcome = {"upgrade": "applied", "downgrade": "reverted", "stamp": "stamped"}[kind]

    def flush() -> None:
        for done in awaiting:
            committed.append(done)
            on_committed(done)
            rev = loaded.scripts.revisions.get(done.revision)
            log.info(f"revision.{outcome}", revision=done.revision, duration_ms=done.duration_ms,
                     message=rev.message if rev else None)
        awaiting.clear()

    def before_revision(step: Any) -> None:
        revision = step.revision.revision
        if state["mode"] == "separate_connection":
            _check_lock_session(state["lock_session"], revision)
        described = loaded.scripts.revisions[revision]
        limits = timeouts.for_revision(described.options)
        state["revision"], state["limits"] = revision, limits
        log.info("revision.started", revision=revision, message=described.message,
                 lock_timeout_s=limits.lock_timeout, statement_timeout_s=limits.statement_timeout)
        state["clock"], state["wall"] = time.monotonic(), datetime.now(timezone.utc)

    def plan_steps(heads: Any, _context: Any) -> Any:
        if kind == "stamp":
            found = directory._stamp_revs((target,), heads)
            steps.extend(",".join(step.to_revisions) or "base" for step in found)
            return found
        found = getattr(directory, f"_{kind}_revs")(target, heads)
        steps.extend(step.revision.revision for step in found)
        return [_Step(step, before_revision) for step in found]

    checksums = loaded.scripts.checksums()

    def on_begin(_connection: Any) -> None:
        """A transaction begins: the previous one committed."""
        flush()

    def on_options(_connection: Any, options: Any) -> None:
        if options.get("isolation_level") == "AUTOCOMMIT" and state["revision"]:
            state["autocommit_in"] = state["revision"]

    def before_statement(connection: Any, cursor: Any) -> None:
        """Set the session's limits when the statement needs others than those in effect
        (rarely: at the first revision, around overrides and autocommit blocks). Straight
        to the driver: SQLAlchemy's statement machinery costs more than the statement."""
        if connection is not state["migration"]:
            return
        dbapi = cursor.connection
        wanted = limits_for(state["limits"] if state["revision"] else None, dbapi.autocommit)
        if wanted is not None and wanted != state["session_limits"]:
            dbapi.cursor().execute(wanted.statement())
            # inside a transaction the setting reverts if it rolls back: and so does the run
            state["session_limits"] = wanted

    def on_commit(connection: Any) -> None:
        """The ledger rows of the steps this transaction applied travel with its COMMIT,
        in one round trip; the driver's own commit then finds nothing left to commit."""
        if connection is state["migration"] and unwritten:
            ledger.write_and_commit(connection.connection.dbapi_connection, unwritten)
            unwritten.clear()
            flush()

    def on_apply(*, step: Any, **_kw: Any) -> None:
        """Inside the step's transaction: its ledger rows are written with its commit."""
        state["revision"] = None
        duration = int((time.monotonic() - state["clock"]) * 1000)
        unwritten.extend(Entry(revision, outcome, checksums.get(revision), state["wall"], duration)
                         for revision in step.up_revision_ids)
        awaiting.append(Applied(",".join(step.up_revision_ids) or "base", duration))

    def on_configure(connection: Any, lock_session: Any) -> None:
        """env.py chose its connection: learn the mode, watch it, and cancel it on a signal."""
        migration = connection if connection is not None else lock_session
        state["migration"], state["lock_session"] = migration, lock_session
        state["mode"] = "locked_connection" if migration is lock_session else "separate_connection"
        dbapi = migration.connection.dbapi_connection
        state["cancel"] = getattr(dbapi, "cancel_safe", None) or dbapi.cancel
        logs.install_stdlib_bridge()  # env.py may have run logging.config.fileConfig
        # no query here: a transaction begun before configure() makes Alembic treat it as
        # external and run every revision in it, instead of one transaction per revision
        pid = dbapi.info.backend_pid if hasattr(dbapi, "info") else dbapi.get_backend_pid()
        if migration.engine is not engine:  # env.py's own engine: watch its connection too
            _listen(migration, listeners)
        if timeouts.lock_timeout > 0 and state["watch"] is None:
            every = watch_every([timeouts.for_revision(rev.options).lock_timeout
                                 for rev in loaded.scripts.revisions.values()])
            state["watch"] = BlockerWatch(lambda: open_connection("watch"), pid, every)
        log.info("migrate.mode", mode=state["mode"], migration_backend_pid=pid, detail=(
            "migrations run on the locked connection" if state["mode"] == "locked_connection"
            else "migrations run on env.py's own connection; the lock is held alongside and "
                 "checked before each revision"))

    def creator() -> Any:
        """Our locked connection first; further ones (env.py's) are new sessions."""
        if not state.get("handed"):
            state["handed"] = True
            return conn
        extra.append(open_connection("env.py"))
        extra[-1].autocommit = False
        return extra[-1]

    conn.autocommit = False
    set_url(loaded.config, url)
    engine = create_engine("postgresql+psycopg://", creator=creator)
    listeners = {"begin": on_begin, "set_connection_execution_options": on_options,
                 "commit": on_commit,
                 "before_cursor_execute": lambda c, cursor, *_a: (interrupt.check(),
                                                                  before_statement(c, cursor))}
    _listen(engine, listeners)

    env = EnvironmentContext(loaded.config, directory, fn=plan_steps, as_sql=False,
                             starting_rev=None, destination_rev=target, tag=None)
    try:
        with interrupt.cancelling(lambda: state["cancel"]()), engine.connect() as sa_conn:
            env.configure = _with_runner_defaults(  # type: ignore[method-assign]
                env.configure, table, on_apply, lambda c: on_configure(c, sa_conn), ledger.name)
            loaded.config.attributes["connection"] = sa_conn
            with env:
                directory.run_env()
            if sa_conn.in_transaction():
                sa_conn.commit()  # e.g. env.py without per-revision transactions
        flush()
    except Exception as exc:
        if interrupt.requested:
            raise interrupt.error() from None
        failed = steps[len(committed)] if len(committed) < len(steps) else None
        watch = state["watch"]
        error = _failure(exc, failed, loaded, conn, watch.last if watch else [])
        if failed is not None and failed == state.get("autocommit_in") and isinstance(
                error, (MigrationFailed, MigrationBlocked, ConnectionLost)):
            error = MigrationFailed(
                f"{error.message}. NOTE: revision {failed} ran an autocommit_block, whose "
                "statements are not rolled back: check what it left (e.g. an INVALID index from "
                "CREATE INDEX CONCURRENTLY: drop it) before running again",
                autocommit_block=True, **error.fields)
        raise error from None
    finally:
        loaded.config.attributes.pop("connection", None)
        if state["watch"] is not None:
            state["watch"].stop()
        for other in extra:
            other.close()
        if not conn.closed and not conn.broken:
            conn.rollback()
            conn.autocommit = True
    return committed


def _listen(target: Any, listeners: dict[str, Callable[..., Any]]) -> None:
    """Hook a migration engine or connection: transaction starts (a new transaction begins
    only after the previous revision's commit succeeded), commits, autocommit switches, and
    every statement (a pending signal is raised there; the session's limits are set)."""
    from sqlalchemy import event

    for name, listener in listeners.items():
        event.listen(target, name, listener)


def _check_lock_session(lock_session: Any, revision: str) -> None:
    try:
        lock_session.exec_driver_sql("SELECT 1")
        lock_session.commit()
    except Exception:
        raise ConnectionLost(f"the session holding the migration lock was lost; stopped before "
                             f"revision {revision} so that no other runner can interleave. Run "
                             "again", revision=revision) from None


def _excluding(table_name: str, include_name: Any) -> Callable[..., bool]:
    """An autogenerate ``include_name`` that hides the ledger table, then asks env.py's own."""
    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table" and name == table_name:
            return False
        return include_name(name, type_, parent_names) if include_name else True

    return include


def _with_runner_defaults(configure: Any, table: VersionTable, on_apply: Any,
                          on_configure: Callable[[Any], None], ledger_name: str) -> Any:
    def configure_with_defaults(**kw: Any) -> Any:
        kw.setdefault("transaction_per_migration", True)
        kw.setdefault("version_table", table.name)
        kw.setdefault("version_table_schema", table.schema)
        if (kw["version_table"], kw["version_table_schema"]) != (table.name, table.schema):
            raise ConfigError(
                f"env.py uses version table {kw['version_table_schema'] or ''}"
                f"{'.' if kw['version_table_schema'] else ''}{kw['version_table']} but the runner "
                f"is set to {table.schema + '.' if table.schema else ''}{table.name}: set "
                "MIGRATION_VERSION_TABLE / MIGRATION_VERSION_TABLE_SCHEMA to match env.py")
        kw["include_name"] = _excluding(ledger_name, kw.get("include_name"))
        callbacks = kw.get("on_version_apply") or []
        kw["on_version_apply"] = [*(callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]),
                                  on_apply]
        on_configure(kw.get("connection"))
        return configure(**kw)

    return configure_with_defaults


def _failure(exc: Exception, revision: str | None, loaded: Loaded, conn: psycopg.Connection[Any],
             blockers: list[dict[str, Any]]) -> Exception:
    if isinstance(exc, RunnerError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    detail = f"{type(orig).__name__}: {first_line(orig)}"[:500]
    where = "the upgrade"
    if revision:
        rev = loaded.scripts.revisions.get(revision)
        where = f"revision {revision}" + (f" ({rev.path})" if rev else "")
    fields = {"revision": revision, "error_class": type(orig).__name__}
    if isinstance(orig, psycopg.errors.LockNotAvailable):
        who = name_sessions(blockers, lambda b: f"{b['state']}, transaction open "
                                                f"{b['transaction_open_s']} s, {b['query']!r}")
        return MigrationBlocked(f"{where} could not get its table lock within lock_timeout and was "
                                f"rolled back; blocked by {who}", blockers=blockers, **fields)
    lost = conn.closed or conn.broken or (
        isinstance(orig, psycopg.OperationalError) and getattr(orig, "sqlstate", None) is None)
    if lost:
        return ConnectionLost(f"the connection to the database was lost during {where} ({detail}); "
                              "PostgreSQL rolls that revision back and frees the lock when it "
                              "notices. Run again: it resumes there", **fields)
    if isinstance(orig, psycopg.errors.QueryCanceled):
        detail += " (MIGRATION_STATEMENT_TIMEOUT, or the revision's migration_runner option)"
    return MigrationFailed(f"{where} failed and was rolled back: {detail}. Fix the migration and "
                           "run again: revisions applied before it stay applied", **fields)
