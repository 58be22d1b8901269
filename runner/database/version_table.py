"""The version table Alembic keeps, and reading the database's revision from it."""

from __future__ import annotations

import dataclasses
import re
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


#: one item of a search_path setting: a quoted name (``""`` inside for a quote) or a bare one
_PATH_ITEM = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^",\s]+))\s*(?:,|$)')
#: of ``candidates`` (schema names), those the role may not use (no USAGE) that exist and,
#: unless the third parameter is true, hold a relation named like the version table
UNUSABLE_SQL = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname = ANY(%s) AND NOT has_schema_privilege(n.oid, 'USAGE')
  AND (%s OR EXISTS (SELECT FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = %s))
"""


def read_revision(conn: psycopg.Connection[Any], table: VersionTable) -> tuple[str, ...]:
    """The database's current revision(s), sorted; ``()`` when the version table does not
    exist. Raises :class:`ConfigError` when the role may not read it or may not use its
    schema (also a schema of its search_path holding a version table it cannot see: never
    "empty" when it could not look), :class:`MigrationBlocked` when another session's lock
    on it outlasts the runner's bound (:mod:`runner.database.own_statement_bounds`)."""
    ident = table.identifier().as_string(conn)
    try:
        with bounded(conn, ident):
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ident,)).fetchone()
            if not (exists and exists[0]):
                hidden = unusable_schema(conn, table)
                if hidden is not None:
                    raise no_usage(conn, table, hidden)
                return ()
            rows = conn.execute(
                sql.SQL("SELECT version_num FROM {}").format(table.identifier())
            ).fetchall()
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName) as exc:
        hidden = unusable_schema(conn, table) if table.schema else None
        if hidden is not None:
            raise no_usage(conn, table, hidden) from None
        if isinstance(exc, psycopg.errors.InvalidSchemaName):
            raise no_schema_error(conn, table.schema) from None
        (user,) = quoted(conn, conn.info.user)
        raise ConfigError(
            f"the role {user} (DB_USER) may not read the version table {ident}: GRANT "
            f"SELECT ON {ident} TO {user} (and the rights the migrations need), or use the "
            "migration role",
            table=ident,
            privilege="SELECT",
        ) from None
    return tuple(sorted(row[0] for row in rows))


def unusable_schema(conn: psycopg.Connection[Any], table: VersionTable) -> str | None:
    """The schema the role may not use (no USAGE) where the version table is or would be
    looked for: ``table.schema``, or the first schema of the role's search_path that holds
    a relation of its name (PostgreSQL skips such schemas silently). None if there is none."""
    if table.schema:
        candidates = [table.schema]
    else:
        row = conn.execute("SELECT current_setting('search_path'), current_user").fetchone()
        candidates = search_path_schemas(row[0], row[1]) if row else []
    found = {
        r[0]
        for r in conn.execute(
            UNUSABLE_SQL, (candidates, table.schema is not None, table.name)
        ).fetchall()
    }
    return next((schema for schema in candidates if schema in found), None)


def no_usage(conn: psycopg.Connection[Any], table: VersionTable, schema: str) -> ConfigError:
    """The error for a version table in a schema the role may not use: the GRANT to run."""
    user, named = quoted(conn, conn.info.user, schema)
    where = "MIGRATION_VERSION_TABLE_SCHEMA" if table.schema else "the role's search_path"
    return ConfigError(
        f"permission denied: the role {user} (DB_USER) may not use the schema {named} "
        f"({where}), where the version table {table.name} is looked for, so it cannot tell "
        f"where the database stands: GRANT USAGE ON SCHEMA {named} TO {user} (as the "
        "schema's owner), or set MIGRATION_VERSION_TABLE_SCHEMA to a schema it may use",
        schema=schema,
        privilege="USAGE",
    )


def quoted(conn: psycopg.Connection[Any], *names: str) -> tuple[str, ...]:
    """``names`` as the server would write them in SQL: quoted only where they must be."""
    row = conn.execute(
        "SELECT array_agg(quote_ident(n) ORDER BY i) FROM unnest(%s::text[]) "
        "WITH ORDINALITY AS t(n, i)",
        (list(names),),
    ).fetchone()
    return tuple(row[0]) if row else names


def search_path_schemas(setting: str, user: str) -> list[str]:
    """The schema names a ``search_path`` setting lists, in order: unquoted names folded to
    lower case, quoted ones as written (``""`` for a quote), ``$user`` as ``user``. Pure."""
    names = [q.replace('""', '"') if q else b.lower() for q, b in _PATH_ITEM.findall(setting)]
    return [user if name == "$user" else name for name in names if name]


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
