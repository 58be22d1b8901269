"""The execution: read the database's revision, and run ``alembic upgrade`` on the locked
connection through Alembic's Python API.

env.py receives the runner's connection in ``config.attributes["connection"]`` (Alembic's
shared-connection pattern). The runner adds its defaults to env.py's ``context.configure``:
one transaction per revision, the configured version table, and a callback that records
each revision as it completes. env.py's own explicit choices win, except a version table
that disagrees with the runner's settings, which is refused (the lock key and the
"already at target" read depend on it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from runner.errors import ConfigError, MigrationFailed
from runner.interrupt import Interrupt
from runner.scripts import Loaded


@dataclasses.dataclass(frozen=True)
class VersionTable:
    name: str = "alembic_version"
    schema: str | None = None

    def identifier(self) -> sql.Composable:
        parts = (self.schema, self.name) if self.schema else (self.name,)
        return sql.Identifier(*parts)


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


def run_upgrade(conn: psycopg.Connection[Any], loaded: Loaded, target: str, *,
                table: VersionTable, interrupt: Interrupt, log: Any,
                on_committed: Callable[[Applied], None]) -> list[Applied]:
    """Apply the revisions up to ``target`` on ``conn`` and return those committed;
    ``on_committed`` hears of each as soon as its commit succeeded.

    A failing revision is rolled back (its own transaction) and :class:`MigrationFailed` is
    raised naming it; revisions committed before it stay. A signal cancels the statement
    in flight and raises :class:`Interrupted` after the rollback. ``conn`` is back in
    autocommit mode on return, unless the session was lost.
    """
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import StaticPool

    directory = loaded.directory
    steps: list[str] = []
    committed: list[Applied] = []
    awaiting: list[Applied] = []  # completed, commit not yet seen
    clock = [time.monotonic()]

    def flush() -> None:
        for done in awaiting:
            committed.append(done)
            on_committed(done)
            log.info("revision.applied", revision=done.revision, duration_ms=done.duration_ms,
                     message=loaded.scripts.revisions[done.revision].message)
        awaiting.clear()

    def plan_steps(heads: Any, _context: Any) -> Any:
        found = directory._upgrade_revs(target, heads)
        steps.extend(step.revision.revision for step in found)
        clock[0] = time.monotonic()
        return found

    def on_apply(*, step: Any, **_kw: Any) -> None:
        now = time.monotonic()
        awaiting.append(Applied(step.up_revision_id, int((now - clock[0]) * 1000)))

    conn.autocommit = False
    engine = create_engine("postgresql+psycopg://", creator=lambda: conn, poolclass=StaticPool)
    # A new transaction begins only after the previous revision's commit succeeded.
    event.listen(engine, "begin", lambda _c: (flush(), clock.__setitem__(0, time.monotonic())))
    event.listen(engine, "before_cursor_execute", lambda *_a: interrupt.check())

    env = EnvironmentContext(loaded.config, directory, fn=plan_steps, as_sql=False,
                             starting_rev=None, destination_rev=target, tag=None)
    env.configure = _with_runner_defaults(env.configure, table, on_apply, log)  # type: ignore[method-assign]
    try:
        with interrupt.cancelling(conn.cancel_safe), engine.connect() as sa_conn:
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
        raise _failure(exc, failed, loaded) from None
    finally:
        loaded.config.attributes.pop("connection", None)
        if not conn.closed and not conn.broken:
            conn.rollback()
            conn.autocommit = True
    return committed


def _with_runner_defaults(configure: Any, table: VersionTable, on_apply: Any, log: Any) -> Any:
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
        callbacks = kw.get("on_version_apply") or []
        kw["on_version_apply"] = [*(callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]),
                                  on_apply]
        log.info("migrate.configured", transaction_per_migration=kw["transaction_per_migration"],
                 on_locked_connection=kw.get("connection") is not None)
        return configure(**kw)

    return configure_with_defaults


def _failure(exc: Exception, revision: str | None, loaded: Loaded) -> Exception:
    if isinstance(exc, ConfigError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    lines = [line for line in str(orig).splitlines() if line.strip()]
    detail = f"{type(orig).__name__}: {lines[0] if lines else ''}"[:500]
    if isinstance(exc, psycopg.OperationalError) or isinstance(orig, psycopg.OperationalError):
        if getattr(orig, "sqlstate", None) is None:
            detail += " (the connection to the database was lost)"
    where = "the upgrade"
    if revision:
        rev = loaded.scripts.revisions.get(revision)
        where = f"revision {revision}" + (f" ({rev.path})" if rev else "")
    return MigrationFailed(f"{where} failed and was rolled back: {detail}. Fix the migration and "
                           "run again: revisions applied before it stay applied",
                           revision=revision, error_class=type(orig).__name__)
