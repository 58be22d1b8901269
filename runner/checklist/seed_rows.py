"""A few generated rows for every table, so that a revision meets data as it would in production.

:func:`plan_rows` decides, from a :class:`~runner.checklist.schema_snapshot.Catalog` alone, which INSERTs to
run: tables in foreign-key order (parents first), every column that can be given a value
(nullable ones too: real rows are seldom empty), values unique per row so unique constraints
hold, foreign keys pointing at rows of the referenced table, identity, serial and
generated columns left to the database. :func:`insert_rows` runs them, each table in its own
savepoint: a table that cannot be filled (a CHECK constraint the generator cannot guess, a
type it does not know) is reported, not fatal.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import psycopg

from runner.checklist.schema_snapshot import Catalog, Column, Constraint, Table

EPOCH = datetime.datetime(2024, 1, 1)


@dataclasses.dataclass(frozen=True)
class Insert:
    table: str
    sql: str  # one INSERT of ``rows`` rows, values as literals and sub-selects
    rows: int


def _ident(name: str) -> str:
    """``schema.table`` or a bare name, double-quoted part by part."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def text_value(type_: str, n: int, labels: tuple[str, ...] | None = None) -> str | None:
    """The ``n``-th value of a column of ``type_`` as text PostgreSQL casts to the type, unique
    per ``n`` where the type allows; None for a type the generator does not know."""
    base = type_.split("(")[0].strip()
    if labels is not None:
        return labels[n % len(labels)] if labels else None
    if type_.endswith("[]"):
        return "{}"
    if base in (
        "smallint",
        "integer",
        "bigint",
        "numeric",
        "real",
        "double precision",
        "money",
        "oid",
    ):
        return str(n % 32000 if base == "smallint" else n)
    if base in ("character varying", "character", "text", "citext", "name"):
        width = int(type_.split("(")[1].rstrip(")")) if "(" in type_ else 12
        return format(n, "x").rjust(width, "0")[-width:] if width < 12 else f"row-{n}"
    if base == "boolean":
        return "true" if n % 2 else "false"
    if base.startswith("timestamp"):
        return (EPOCH + datetime.timedelta(seconds=n)).isoformat()
    if base == "date":
        return (EPOCH + datetime.timedelta(days=n)).date().isoformat()
    if base.startswith("time"):
        return (EPOCH + datetime.timedelta(seconds=n)).time().isoformat()
    if base == "interval":
        return f"{n} seconds"
    if base == "uuid":
        return str(uuid.UUID(int=n))
    if base in ("json", "jsonb"):
        return f'{{"n": {n}}}'
    if base == "bytea":
        return "\\x" + format(n, "x").rjust(2, "0")
    if base in ("inet", "cidr"):
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return None


def _fills_itself(column: Column) -> bool:
    """The database gives the value: identity, generated, or a sequence default."""
    return bool(
        column.identity or column.generated or (column.default and "nextval(" in column.default)
    )


def order_tables(catalog: Catalog) -> list[Table]:
    """Tables with the ones they reference first (self-references and cycles ignored)."""
    done: list[Table] = []
    seen: set[str] = set()

    def visit(name: str, path: frozenset[str]) -> None:
        if name in seen or name in path or name not in catalog.tables:
            return
        table = catalog.tables[name]
        for fk in table.constraints:
            if fk.kind == "f" and fk.ref_table and fk.ref_table != name:
                visit(fk.ref_table, path | {name})
        seen.add(name)
        done.append(table)

    for name in sorted(catalog.tables):
        visit(name, frozenset())
    return done


def _reference(fk: Constraint, column: str, offset: int) -> str:
    """A sub-select of ``column``'s value in the ``offset``-th newest row of the parent."""
    ref_column = fk.ref_columns[fk.columns.index(column)]
    order = ", ".join(f"{_ident(c)} DESC" for c in fk.ref_columns)
    return (
        f"(SELECT {_ident(ref_column)} FROM {_ident(fk.ref_table or '')} "
        f"ORDER BY {order} LIMIT 1 OFFSET {offset})"
    )


def plan_rows(catalog: Catalog, rows: int, start: int) -> list[Insert]:
    """The INSERTs that put ``rows`` rows into every table of ``catalog``. Values are
    numbered from ``start``: give each call a fresh range so rows stay unique across calls.
    Pure."""
    out = []
    for table in order_tables(catalog):
        fks = {col: fk for fk in table.constraints if fk.kind == "f" for col in fk.columns}
        fill = [c for c in table.columns if not _fills_itself(c)]
        values = []
        for index in range(rows):
            n = start + index
            row = []
            for column in fill:
                fk = fks.get(column.name)
                if fk is not None:
                    row.append(
                        "NULL"
                        if fk.ref_table == table.name and not column.not_null
                        else _reference(fk, column.name, index)
                    )
                    continue
                enum = catalog.enums.get(column.base_type) or catalog.enums.get(column.type)
                text = text_value(column.base_type or column.type, n, enum)
                row.append(
                    f"{_quote(text)}::{column.type}"
                    if text is not None
                    else (
                        "DEFAULT" if column.default is not None or not column.not_null else "NULL"
                    )
                )
            values.append(f"({', '.join(row)})")
        if fill:
            sql = (
                f"INSERT INTO {_ident(table.name)} ({', '.join(_ident(c.name) for c in fill)}) "
                f"VALUES {', '.join(values)}"
            )
        else:
            sql = f"INSERT INTO {_ident(table.name)} SELECT FROM generate_series(1, {rows})"
        out.append(Insert(table.name, sql, rows))
    return out


@dataclasses.dataclass(frozen=True)
class Seeded:
    filled: tuple[str, ...]  # tables that got their rows
    failed: tuple[tuple[str, str], ...]  # (table, why) for those that could not be filled


def insert_rows(conn: Any, inserts: list[Insert]) -> Seeded:
    """Run ``inserts`` on ``conn`` (psycopg, autocommit off: commits at the end), each in a
    savepoint so that one table that cannot be filled does not stop the others."""
    filled, failed = [], []
    for insert in inserts:
        try:
            with conn.transaction():
                conn.execute(insert.sql)
            filled.append(insert.table)
        except psycopg.Error as exc:  # the table is reported, the others go on
            failed.append(
                (insert.table, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            )
    return Seeded(tuple(filled), tuple(failed))
