"""Tests of one revision's data: migrate a fresh database to a revision, put rows in, migrate
on, look at what the revision did to them. The ``migration_runner`` fixture of the pytest
plugin (:mod:`runner.checklist.pytest_plugin`) hands a test one :class:`MigrationSteps`.

Migrations run through the project's own env.py, on the connection verify would give it
(``config.attributes["connection"]``), one Alembic command per call; rows go in and queries
run on a second, autocommit session, so what a test inserts is committed before the next
revision sees it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from runner.checklist.scratch import connections
from runner.config.database_url import ConnectionSpec
from runner.errors import ConfigError
from runner.scripts.env_run import run_env
from runner.scripts.load import Loaded, set_url


class MigrationSteps:
    """One empty database and the project's migrations. Each method is one step; none
    catches what a revision raises (the test sees it as it is)."""

    def __init__(self, loaded: Loaded, conn: Any, sa_conn: Any) -> None:
        self.loaded = loaded
        #: psycopg, autocommit: for rows and queries
        self.connection = conn
        self._sa_conn = sa_conn

    def upgrade(self, target: str = "heads") -> None:
        """``alembic upgrade TARGET`` (a revision, ``heads``, ``+1`` ...), committed."""
        self._run("upgrade", target)

    def downgrade(self, target: str) -> None:
        """``alembic downgrade TARGET`` (a revision, ``-1``, ``base`` ...), committed."""
        self._run("downgrade", target)

    def current(self) -> tuple[str, ...]:
        """The revisions the database is at (empty before the first upgrade)."""
        table = self.connection.execute("SELECT to_regclass('alembic_version')").fetchone()
        if not table or table[0] is None:
            return ()
        rows = self.connection.execute("SELECT version_num FROM alembic_version").fetchall()
        return tuple(sorted(row[0] for row in rows))

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (column to value) into ``table`` (``name`` or ``schema.name``)."""
        from psycopg import sql

        for row in rows:
            self.connection.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(*table.split(".")),
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )

    def query(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows ``statement`` returns."""
        return list(self.connection.execute(statement, params).fetchall())

    def _run(self, kind: str, target: str) -> None:
        self.loaded.config.attributes["connection"] = self._sa_conn
        try:
            run_env(self.loaded, kind, target)
            if self._sa_conn.in_transaction():
                self._sa_conn.commit()
        except BaseException:
            if self._sa_conn.in_transaction():
                self._sa_conn.rollback()
            raise


@contextlib.contextmanager
def fresh_database(admin: ConnectionSpec) -> Iterator[ConnectionSpec]:
    """A new, empty database on ``admin``'s server (its role needs CREATEDB), dropped
    afterwards."""
    import dataclasses

    import psycopg

    from runner.database.connect import libpq_reason, open_connection

    name = f"migration_steps_{uuid.uuid4().hex[:12]}"
    try:  # psycopg's error would carry the conninfo, password included, into the report
        with open_connection(admin, 10, "migration-runner pytest") as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot create a scratch database on {admin.redacted()}: {libpq_reason(exc)} "
            "(the URL's role needs CREATEDB)"
        ) from None
    try:
        yield dataclasses.replace(admin, dbname=name)
    finally:
        with open_connection(admin, 10, "migration-runner pytest") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migration_steps(loaded: Loaded, spec: ConnectionSpec) -> Iterator[MigrationSteps]:
    """:class:`MigrationSteps` on the (empty) database ``spec`` names."""
    with connections(spec) as (conn, sa_conn):
        set_url(loaded.config, spec.url(hide_password=False))
        yield MigrationSteps(loaded, conn, sa_conn)
        loaded.config.attributes.pop("connection", None)
