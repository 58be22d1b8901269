"""Size-aware grading: the same finding matters on an empty table and on one with millions
of rows. Sizes come from the live database (``pg_class.reltuples``, relation size)."""

from __future__ import annotations

import dataclasses
from typing import Any

from runner.checklist.schema_snapshot import qualified

#: findings whose cost grows with the table: a lock held while the table is scanned or
#: rewritten, or an index built (squawk's rule names)
SIZE_GRADED = frozenset(
    {
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "changing-column-type",
        "adding-field-with-default",
        "adding-not-nullable-field",
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
        "disallowed-unique-constraint",
        "adding-serial-primary-key-field",
        "adding-primary-key-constraint",
    }
)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Below both ``small`` limits a table is tiny (the finding is only information); at or
    above either ``large`` limit it is big (the finding is an error)."""

    small_rows: int = 10_000
    small_bytes: int = 10 * 2**20
    large_rows: int = 1_000_000
    large_bytes: int = 2**30


@dataclasses.dataclass(frozen=True)
class TableSize:
    rows: float | None  # reltuples; None when the table was never analysed
    bytes: int

    def describe(self) -> str:
        rows = (
            "row count unknown (never analysed)" if self.rows is None else f"~{self.rows:,.0f} rows"
        )
        return f"{rows}, {_human(self.bytes)}"


def _human(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # unreachable


def grade(size: TableSize, thresholds: Thresholds) -> str:
    """``info`` (tiny), ``warning`` or ``error`` (big) for a size-graded finding. Pure."""
    rows = size.rows if size.rows is not None else 0
    if rows >= thresholds.large_rows or size.bytes >= thresholds.large_bytes:
        return "error"
    if rows < thresholds.small_rows and size.bytes < thresholds.small_bytes:
        return "info"
    return "warning"


_SIZES = """
SELECT n.nspname, c.relname, c.reltuples, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""


def table_sizes(conn: Any) -> dict[str, TableSize]:
    """Every table's size on ``conn``'s database, by the name the lint gives tables."""
    return {
        qualified(schema, name): TableSize(rows if rows >= 0 else None, size)
        for schema, name, rows, size in conn.execute(_SIZES)
    }
