"""The version table Alembic keeps, and reading the database's revision from it."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
from psycopg import sql

from runner.database.own_statement_bounds import bounded
from runner.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class VersionTable:
    name: str = "alembic_version"
    schema: str | None = None

    def identifier(self) -> sql.Composable:
        parts = (self.schema, self.name) if self.schema else (self.name,)
        return sql.Identifier(*parts)


def read_revision(conn: psycopg.Connection[Any], table: VersionTable) -> tuple[str, ...]:
    """The database's current revision(s), sorted; ``()`` when the version table does not
    exist. Raises :class:`ConfigError` when the role may not read it, :class:`MigrationBlocked`
    when another session's lock on it outlasts the runner's bound (:mod:`runner.database.own_statement_bounds`)."""
    ident = table.identifier().as_string(conn)
    try:
        with bounded(conn, ident):
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ident,)).fetchone()
            if not (exists and exists[0]):
                return ()
            rows = conn.execute(
                sql.SQL("SELECT version_num FROM {}").format(table.identifier())
            ).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(
            f"DB_USER may not read the version table {ident}: grant it SELECT (and "
            "the rights the migrations need), or use the migration role"
        ) from None
    except psycopg.errors.InvalidSchemaName:
        raise ConfigError(
            f"the schema {table.schema!r} (MIGRATION_VERSION_TABLE_SCHEMA) does not "
            f"exist: create it (CREATE SCHEMA {table.schema}) or fix the "
            "setting",
            schema=table.schema,
        ) from None
    return tuple(sorted(row[0] for row in rows))
