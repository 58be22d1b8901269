"""A normalized snapshot of a database's schema, and a pure diff between two snapshots.

``verify`` takes a snapshot before a revision's upgrade and after its downgrade: the two must
be equal, and every difference is named precisely (``index ix_calls_phone: only after the
downgrade``). The snapshot holds what a migration changes: tables, columns (type, NOT NULL,
default, identity, generated), constraints, indexes, enum types and sequences, in every user
schema. It holds no data and nothing that differs between two equal schemas (column order,
OIDs, sequence positions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

#: schemas that are PostgreSQL's own, never a migration's


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): ``character varying(255)``, ``mood``, ``integer[]``
    not_null: bool
    default: str | None = None  # pg_get_expr() of the default
    identity: str = ""  # "" | "always" | "by default"
    generated: bool = False  # GENERATED ALWAYS AS (...) STORED
    base_type: str = ""  # for a domain, its base type; else the same as ``type``

    def definition(self) -> str:
        parts = [self.type, "NOT NULL" if self.not_null else "NULL"]
        if self.identity:
            parts.append(f"GENERATED {self.identity.upper()} AS IDENTITY")
        elif self.generated:
            parts.append(f"GENERATED ALWAYS AS ({self.default}) STORED")
        elif self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # p (primary key), u (unique), f (foreign key), c (check), x (exclusion)
    columns: tuple[str, ...]
    definition: str  # pg_get_constraintdef()
    ref_table: str | None = None  # foreign keys: the referenced table (qualified name)
    ref_columns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Table:
    name: str  # ``calls``, or ``schema.table`` outside public
    columns: tuple[Column, ...]  # in attnum order
    constraints: tuple[Constraint, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclasses.dataclass(frozen=True)
class Catalog:
    tables: Mapping[str, Table]
    indexes: Mapping[str, str]  # qualified index name -> pg_get_indexdef()
    enums: Mapping[str, tuple[str, ...]]  # qualified type name -> labels in sort order
    sequences: Mapping[str, str]  # qualified name -> type, start, increment, owner

    def items(self) -> dict[tuple[str, str], str]:
        """Every object as ``(kind, name) -> definition``: what :func:`diff` compares."""
        out: dict[tuple[str, str], str] = {}
        for table in self.tables.values():
            out[("table", table.name)] = ""
            for column in table.columns:
                out[("column", f"{table.name}.{column.name}")] = column.definition()
            for constraint in table.constraints:
                out[("constraint", f"{table.name}.{constraint.name}")] = constraint.definition
        out.update({("index", name): d for name, d in self.indexes.items()})
        out.update(
            {("enum", name): ", ".join(map(repr, labels)) for name, labels in self.enums.items()}
        )
        out.update({("sequence", name): d for name, d in self.sequences.items()})
        return out


@dataclasses.dataclass(frozen=True)
class Difference:
    kind: str  # table, column, constraint, index, enum, sequence
    name: str
    expected: str | None  # None: absent from the expected schema
    actual: str | None  # None: absent from the actual schema

    def describe(self, expected_label: str, actual_label: str) -> str:
        if self.actual is None:
            return f"{self.kind} {self.name}: {expected_label}, missing {actual_label}"
        if self.expected is None:
            return f"{self.kind} {self.name}: not {expected_label}, present {actual_label} ({self.actual})"
        return (
            f"{self.kind} {self.name}: {self.expected!r} {expected_label}, "
            f"{self.actual!r} {actual_label}"
        )


def diff(expected: Catalog, actual: Catalog) -> list[Difference]:
    """Every object that is missing, extra or defined differently in ``actual``, sorted by
    kind and name. Empty when the schemas are equal. Pure."""
    left, right = expected.items(), actual.items()
    return [
        Difference(kind, name, left.get((kind, name)), right.get((kind, name)))
        for kind, name in sorted(left.keys() | right.keys())
        if left.get((kind, name)) != right.get((kind, name))
    ]


# --- reading it ---------------------------------------------------------------------------

_SCHEMA_FILTER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'"
)

_TABLES = f"""
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_SCHEMA_FILTER} AND NOT c.relispartition
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS = """
SELECT c.conrelid, c.conname, c.contype, pg_get_constraintdef(c.oid),
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
       c.confrelid,
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint c WHERE c.conrelid = ANY(%s) AND c.contype <> 'n'
"""

_INDEXES = f"""
SELECT i.indrelid, n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_SCHEMA_FILTER}
"""

_ENUMS = f"""
SELECT n.nspname, t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {_SCHEMA_FILTER} GROUP BY 1, 2
"""

_SEQUENCES = f"""
SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcycle, owner.relname, a.attname, d.deptype, owner.oid
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class owner ON owner.oid = d.refobjid
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE {_SCHEMA_FILTER}
"""


def qualified(schema: str, name: str) -> str:
    """How the snapshot names an object: bare in ``public``, ``schema.name`` elsewhere."""
    return name if schema == "public" else f"{schema}.{name}"


def snapshot(conn: Any, ignore_tables: Iterable[str] = ()) -> Catalog:
    """Read the schema of the database ``conn`` (a psycopg connection) is on. Tables named in
    ``ignore_tables`` (qualified as the snapshot names them: the version table, the ledger)
    are left out, with their indexes and sequences. Read-only; safe to call any time."""
    ignored = set(ignore_tables)
    names = {oid: qualified(schema, name) for oid, schema, name in conn.execute(_TABLES)}
    names = {oid: name for oid, name in names.items() if name not in ignored}
    oids = list(names)
    columns: dict[int, list[Column]] = {oid: [] for oid in oids}
    for rel, name, type_, not_null, default, identity, generated, base in conn.execute(
        _COLUMNS, (oids,)
    ):
        columns[rel].append(
            Column(
                name,
                type_,
                not_null,
                default,
                {"a": "always", "d": "by default"}.get(identity, ""),
                generated == "s",
                base,
            )
        )
    constraints: dict[int, list[Constraint]] = {oid: [] for oid in oids}
    for rel, name, kind, definition, cols, ref, ref_cols in conn.execute(_CONSTRAINTS, (oids,)):
        constraints[rel].append(
            Constraint(
                name,
                kind,
                tuple(cols),
                definition,
                names.get(ref) if ref else None,
                tuple(ref_cols or ()),
            )
        )
    tables = {
        names[oid]: Table(
            names[oid], tuple(columns[oid]), tuple(sorted(constraints[oid], key=lambda c: c.name))
        )
        for oid in oids
    }
    indexes = {
        qualified(schema, name): definition
        for rel, schema, name, definition in conn.execute(_INDEXES)
        if rel in names
    }
    enums = {
        qualified(schema, name): tuple(labels) for schema, name, labels in conn.execute(_ENUMS)
    }
    sequences: dict[str, str] = {}
    for (
        schema,
        name,
        type_,
        start,
        step,
        low,
        high,
        cycle,
        owner,
        column,
        dep,
        owner_oid,
    ) in conn.execute(_SEQUENCES):
        if owner_oid is not None and owner_oid not in names:
            continue  # the sequence of an ignored table
        owned = f" owned by {owner}.{column}" if owner and column else ""
        sequences[qualified(schema, name)] = (
            f"{type_} start {start} increment {step} min {low} max {high}"
            f"{' cycle' if cycle else ''}{owned}{' (identity)' if dep == 'i' else ''}"
        )
    return Catalog(dict(sorted(tables.items())), indexes, enums, sequences)


def is_empty(catalog: Catalog) -> bool:
    return not catalog.items()
