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
        raise no_schema_error(conn, table.schema) from None
    return tuple(sorted(row[0] for row in rows))


def no_schema_error(conn: psycopg.Connection[Any], schema: str | None) -> ConfigError:
    """What PostgreSQL's ``invalid_schema_name`` means for the runner's tables: the schema
    MIGRATION_VERSION_TABLE_SCHEMA names is missing, or (the setting unset, the tables
    unqualified) the session's ``search_path`` selects no schema that exists."""
    if schema is not None:
        return ConfigError(
            f"the schema {schema!r} (MIGRATION_VERSION_TABLE_SCHEMA) does not exist: create "
            f"it (CREATE SCHEMA {schema}) or fix the setting",
            schema=schema,
        )
    search_path = _search_path(conn)
    user, database = conn.info.user, conn.info.dbname
    return ConfigError(
        f"no schema is selected to create the runner's tables in: the session's search_path "
        f"({search_path!r}, set for the role or the database, or in the connection's "
        "options) names no schema that exists. Name an existing schema in it (e.g. "
        f'ALTER ROLE "{user}" IN DATABASE "{database}" RESET search_path, or SET '
        "search_path = public), or set MIGRATION_VERSION_TABLE_SCHEMA",
        search_path=search_path,
    )


def _search_path(conn: psycopg.Connection[Any]) -> str | None:
    """The session's search_path (``None`` if it cannot be read now: a failed transaction)."""
    try:
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None
