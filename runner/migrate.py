"""The execution: read the database's revision, and run ``alembic upgrade`` through Alembic's
Python API on the locked connection.

env.py receives the runner's connection in ``config.attributes["connection"]`` (Alembic's
shared-connection pattern) and the database URL in ``sqlalchemy.url``. The runner adds its
defaults to env.py's ``context.configure``: one transaction per revision, the configured
version table, and a callback recording each revision as it completes. env.py's explicit
choices win, except a version table that disagrees with the runner's settings (the lock key
and the "already at target" read depend on it).

Before each revision the runner sets ``lock_timeout`` / ``statement_timeout`` on the
migration session (a revision may override them with a module-level
``migration_runner = {...}``), and, when env.py migrates on a connection of its own,
checks that the session holding the lock is still alive.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from runner import logs
from runner.errors import (ConfigError, ConnectionLost, MigrationBlocked, MigrationFailed,
                           RunnerError, first_line)
from runner.interrupt import Interrupt
from runner.ledger import Ledger
from runner.scripts import Loaded, set_url

OpenConnection = Callable[[str], psycopg.Connection[Any]]

BLOCKERS_SQL = """
SELECT pid, application_name, host(client_addr) AS client_addr, state,
       round(extract(epoch FROM now() - xact_start))::int AS transaction_open_s,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS query
FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid
"""
WATCH_EVERY_S = 0.2


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
        return dataclasses.replace(self, **dict(options))

    def statement(self) -> str:
        """Transaction-scoped: statements in an ``autocommit_block`` (``CREATE INDEX
        CONCURRENTLY``, which waits for old transactions without blocking anyone, and cannot
        be rolled back if cancelled) run without them."""
        return (f"SELECT set_config('lock_timeout', '{int(self.lock_timeout * 1000)}', true), "
                f"set_config('statement_timeout', '{int(self.statement_timeout * 1000)}', true)")


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
    so that a ``lock_timeout`` can be reported with the blocker's name."""

    def __init__(self, conn: psycopg.Connection[Any], pid: int) -> None:
        self.conn, self.pid = conn, pid
        self.last: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="blocker-watch")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_EVERY_S):
            try:
                rows = self.conn.cursor(row_factory=dict_row).execute(BLOCKERS_SQL, (self.pid,)).fetchall()
            except psycopg.Error:
                return  # only diagnostics: the migration itself reports real trouble
            if rows:
                self.last = rows

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.conn.close()


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
    Each step is recorded in ``ledger`` inside its own transaction.
    """
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import create_engine

    directory = loaded.directory
    steps: list[str] = []
    committed: list[Applied] = []
    awaiting: list[Applied] = []  # completed, commit not yet seen
    extra: list[psycopg.Connection[Any]] = []
    state: dict[str, Any] = {"clock": time.monotonic(), "wall": datetime.now(timezone.utc),
                             "watch": None, "mode": None,
                             "migration": None, "lock_session": None, "cancel": conn.cancel_safe}

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
        limits = timeouts.for_revision(loaded.scripts.revisions[revision].options)
        state["revision"], state["limits"] = revision, limits
        state["migration"].exec_driver_sql(limits.statement())
        log.info("revision.started", revision=revision, lock_timeout_s=limits.lock_timeout,
                 statement_timeout_s=limits.statement_timeout)
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

    def on_begin(connection: Any) -> None:
        """A transaction begins: the previous one committed. Inside a revision (after its
        autocommit_block), its timeouts apply again."""
        flush()
        dbapi = connection.connection.dbapi_connection
        if state.get("revision") and connection is state["migration"] and not dbapi.autocommit:
            dbapi.cursor().execute(state["limits"].statement())

    def on_options(_connection: Any, options: Any) -> None:
        if options.get("isolation_level") == "AUTOCOMMIT" and state.get("revision"):
            state["autocommit_in"] = state["revision"]

    def on_apply(*, ctx: Any, step: Any, **_kw: Any) -> None:
        """Inside the step's transaction: the ledger row commits or rolls back with it."""
        state["revision"] = None
        duration = int((time.monotonic() - state["clock"]) * 1000)
        for revision in step.up_revision_ids:
            ledger.record(ctx.connection, revision=revision, outcome=outcome,
                          checksum=checksums.get(revision), started_at=state["wall"],
                          duration_ms=duration)
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
            _listen(migration, on_begin, on_options, interrupt)
        if timeouts.lock_timeout > 0 and state["watch"] is None:
            state["watch"] = BlockerWatch(open_connection("watch"), pid)
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
    _listen(engine, on_begin, on_options, interrupt)

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


def _listen(target: Any, on_begin: Any, on_options: Any, interrupt: Interrupt) -> None:
    """Hook a migration engine or connection: transaction starts (a new transaction begins
    only after the previous revision's commit succeeded), autocommit switches, and a check
    for a signal before every statement."""
    from sqlalchemy import event

    event.listen(target, "begin", on_begin)
    event.listen(target, "set_connection_execution_options", on_options)
    event.listen(target, "before_cursor_execute", lambda *_a: interrupt.check())


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
        who = "; ".join(f"pid {b['pid']} ({b['application_name'] or 'no application_name'}, "
                        f"{b['state']}, transaction open {b['transaction_open_s']} s: "
                        f"{b['query']!r})" for b in blockers) or "a session that has since gone"
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
