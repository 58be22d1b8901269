"""The audit ledger: one row per revision applied, reverted, stamped or adopted, next to the
version table.

Rows for a revision are written in the same transaction as the revision itself, so the
ledger can never disagree with the schema. A database that has no ledger gets one the first
time a runner holds the lock, with an ``adopted`` row (and the file's checksum) for every
revision already applied, so later edits of those files are caught too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import abc, adapt
from psycopg.rows import dict_row
from psycopg.sql import Identifier, Literal
from psycopg.types.datetime import TimestamptzLoader

from runner.database.own_statement_bounds import bounded
from runner.database.version_table import no_schema_error
from runner.errors import ConfigError

OUTCOMES = ("applied", "reverted", "stamped", "unstamped", "adopted")
#: outcomes after which a revision is not applied (its checksum no longer binds its file)
NOT_APPLIED = ("reverted", "unstamped")
COLUMNS = (
    "id",
    "revision",
    "outcome",
    "checksum",
    "started_at",
    "finished_at",
    "duration_ms",
    "runner_version",
    "ran_on",
)
#: the relation named like the ledger: its kind and columns (no row: there is none)
SHAPE_SQL = """
SELECT c.relkind::text, array_agg(a.attname::text) FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.oid = to_regclass(%s) GROUP BY c.relkind
"""
RELKINDS = {
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "i": "index",
    "f": "foreign table",
    "c": "composite type",
    "r": "table",
    "p": "table",
}
WRITTEN = "(revision, outcome, checksum, started_at, duration_ms, detail, runner_version, ran_on)"
#: added by the runner that recorded stamps both ways; an older ledger gets it under the lock
DETAIL = "detail"


class _TimeOrInfinity(TimestamptzLoader):
    """A ledger time as a ``datetime``, or ``'infinity'`` / ``'-infinity'`` as the text it is:
    a user or a restore may put those there, and no ``datetime`` can hold them."""

    def load(self, data: Any) -> datetime | str:  # type: ignore[override]  # on purpose
        if bytes(data).lstrip(b"-") == b"infinity":
            return bytes(data).decode()
        return super().load(data)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row to write: a revision applied, reverted, stamped or unstamped by this run;
    ``detail`` says what a stamp did (``stamp a1 -> a3``)."""

    revision: str
    outcome: str
    checksum: str | None
    started_at: datetime
    duration_ms: int
    detail: str | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.revision,
            self.outcome,
            self.checksum,
            self.started_at,
            self.duration_ms,
            self.detail,
        )


@dataclasses.dataclass(frozen=True)
class Ledger:
    name: str
    schema: str | None
    runner_version: str
    ran_on: str

    @functools.cached_property
    def _same_for_every_row(self) -> str:
        return f", {Literal(self.runner_version).as_string(None)}, {Literal(self.ran_on).as_string(None)})"

    @functools.cached_property
    def _quoting(self) -> abc.Transformer:
        """psycopg's quoting, as :class:`~psycopg.sql.Literal` does it, made once: a
        ``Literal`` per value builds a new one each time."""
        return adapt.Transformer()

    @property
    def qualified(self) -> str:
        return Identifier(*((self.schema,) if self.schema else ()), self.name).as_string(None)

    def columns(self, conn: psycopg.Connection[Any]) -> list[str] | None:
        """The ledger's columns, or None if there is none. Raises :class:`ConfigError` when
        something else has its name (a view, a sequence, a table of other columns)."""
        row = conn.execute(SHAPE_SQL, (self.qualified,)).fetchone()
        if row is None:
            return None
        kind, columns = row
        if kind not in ("r", "p") or not set(COLUMNS) <= set(columns):
            what = RELKINDS.get(kind, "relation") + (
                "" if kind not in ("r", "p") else " with other columns"
            )
            raise ConfigError(
                f"{self.qualified} is a {what}, not the runner's audit ledger: rename it, or "
                "set MIGRATION_LEDGER_TABLE to a free name",
                table=self.qualified,
            )
        return list(columns)

    def ensure(
        self, conn: psycopg.Connection[Any], applied: Iterable[str], checksums: Mapping[str, str]
    ) -> int:
        """Create the ledger if missing (autocommit ``conn``, under the migration lock) and
        adopt the revisions already applied. Returns how many rows were adopted. Raises
        :class:`ConfigError` naming the privilege or schema that is missing."""
        with self.explained(conn, "create"), bounded(conn, self.qualified):
            columns = self.columns(conn)
            if columns is None:
                return self._create(conn, sorted(applied), checksums)
            if DETAIL not in columns:
                self._add_detail(conn)
            return 0

    def _add_detail(self, conn: psycopg.Connection[Any]) -> None:
        """Bring a ledger of an older runner up to date: the ``detail`` column, and
        ``unstamped`` among the outcomes."""
        check = Identifier(f"{self.name}_outcome_check"[:63]).as_string(None)
        conn.execute(
            f"ALTER TABLE {self.qualified} ADD COLUMN {DETAIL} text, "
            f"DROP CONSTRAINT IF EXISTS {check}, ADD CONSTRAINT {check} CHECK "
            f"(outcome IN ({', '.join(repr(o) for o in OUTCOMES)}))"
        )

    def _create(
        self, conn: psycopg.Connection[Any], adopted: list[str], checksums: Mapping[str, str]
    ) -> int:
        """In the bounded transaction of :meth:`ensure`."""
        conn.execute(
            f"CREATE TABLE {self.qualified} ("
            "id bigserial PRIMARY KEY, revision text NOT NULL, "
            f"outcome text NOT NULL CHECK (outcome IN ({', '.join(repr(o) for o in OUTCOMES)})), "
            "checksum text, started_at timestamptz NOT NULL, "
            "finished_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
            "duration_ms integer NOT NULL, runner_version text NOT NULL, ran_on text NOT NULL, "
            f"{DETAIL} text)"
        )
        conn.execute(
            f"COMMENT ON TABLE {self.qualified} IS "
            "'migration-runner: one row per revision applied, reverted, stamped or adopted'"
        )
        for revision in adopted:
            conn.execute(
                f"INSERT INTO {self.qualified} {WRITTEN} "
                "VALUES (%s, 'adopted', %s, now(), 0, NULL, %s, %s)",
                (revision, checksums.get(revision), self.runner_version, self.ran_on),
            )
        return len(adopted)

    def write_and_commit(
        self, dbapi_connection: Any, entries: Sequence[Entry], check: str | None = None
    ) -> None:
        """Write ``entries`` and commit, in one round trip, on a driver connection (psycopg
        or psycopg2) inside the transaction that applied them: the rows commit with their
        revisions or not at all. ``check``: a statement sent first that fails to stop the
        commit (the rest of the message is skipped, the transaction aborted). The ledger
        exists: :meth:`ensure` ran under the lock."""
        dbapi_connection.cursor().execute(self.insert_and_commit(entries, check))

    def write(self, dbapi_connection: Any, entries: Sequence[Entry]) -> None:
        """Write ``entries`` inside the transaction that applied them, on a driver connection
        that cannot send a COMMIT with them (asyncpg): its own commit follows."""
        dbapi_connection.cursor().execute(self.insert(entries))

    def insert_and_commit(self, entries: Sequence[Entry], check: str | None = None) -> str:
        """The statements :meth:`write_and_commit` sends."""
        return f"{check + '; ' if check else ''}{self.insert(entries)}; COMMIT"

    def insert(self, entries: Sequence[Entry]) -> str:
        """The INSERT of ``entries``: values as literals (quoted by psycopg), since several
        statements in one message need the simple protocol, and drivers differ on the
        parameter style."""
        literal = self._quoting.as_literal
        rows = ", ".join(
            "(" + ", ".join(literal(v).decode() for v in entry.row()) + self._same_for_every_row
            for entry in entries
        )
        return f"INSERT INTO {self.qualified} {WRITTEN} VALUES {rows}"

    def latest(self, conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
        """The most recent row for each revision (empty if there is no ledger). Its times are
        ``datetime``, ``None`` or the text ``'infinity'`` / ``'-infinity'``."""
        with self.explained(conn, "read"), bounded(conn, self.qualified):
            columns = self.columns(conn)
            if columns is None:
                return {}
            wanted = [*COLUMNS, *([DETAIL] if DETAIL in columns else [])]
            cursor = conn.cursor(row_factory=dict_row)
            cursor.adapters.register_loader("timestamptz", _TimeOrInfinity)
            rows = cursor.execute(
                f"SELECT DISTINCT ON (revision) {', '.join(wanted)} FROM {self.qualified} "
                "ORDER BY revision, id DESC"
            ).fetchall()
        return {row["revision"]: row for row in rows}

    @contextlib.contextmanager
    def explained(self, conn: psycopg.Connection[Any], doing: str) -> Iterator[None]:
        """Turn what the database says about a missing privilege or schema into a
        :class:`ConfigError` saying what to grant or set (``doing``: read or create)."""
        schema = self.schema or "public"
        try:
            yield
        except psycopg.errors.InsufficientPrivilege:
            user = conn.info.user
            fix = (
                f"GRANT SELECT, INSERT ON {self.qualified} TO {user} (and USAGE, SELECT on its "
                "id sequence)"
                if doing == "read"
                else f"GRANT CREATE ON SCHEMA {schema} TO {user} (PostgreSQL 15 no longer grants "
                "it on public to every role), or create the ledger as the schema's owner"
            )
            raise ConfigError(
                f"the role {user} may not {doing} the runner's audit ledger "
                f"{self.qualified}: {fix}; or set MIGRATION_LEDGER_TABLE / "
                "MIGRATION_VERSION_TABLE_SCHEMA to a place it may use",
                table=self.qualified,
                privilege="CREATE" if doing == "create" else "SELECT",
            ) from None
        except psycopg.errors.InvalidSchemaName:
            raise no_schema_error(conn, self.schema) from None


def edited(
    latest: Mapping[str, Mapping[str, Any]], checksums: Mapping[str, str], applied: Iterable[str]
) -> list[dict[str, Any]]:
    """Applied revisions whose file no longer has the checksum recorded when it was applied."""
    found = []
    for revision in sorted(applied):
        row = latest.get(revision)
        if row is None or row["outcome"] in NOT_APPLIED or not row["checksum"]:
            continue
        if checksums.get(revision) not in (None, row["checksum"]):
            found.append(
                {
                    "revision": revision,
                    "recorded": row["checksum"],
                    "file": checksums[revision],
                    "recorded_at": str(row["finished_at"]),
                }
            )
    return found


def step_entries(
    outcome: str,
    step: Any,
    graph: Mapping[str, tuple[str, ...]],
    checksums: Mapping[str, str],
    started_at: datetime,
    duration_ms: int,
) -> tuple[list[Entry], str]:
    """The ledger rows of one of Alembic's steps (its ``MigrationInfo``) and the name the
    run reports it by: the revisions it ran, or for a stamp where it went."""
    if step.is_stamp:
        return (
            stamp_entries(
                graph,
                step.source_revision_ids,
                step.destination_revision_ids,
                checksums,
                started_at,
                duration_ms,
            ),
            ",".join(step.destination_revision_ids) or "base",
        )
    return (
        [
            Entry(revision, outcome, checksums.get(revision), started_at, duration_ms)
            for revision in step.up_revision_ids
        ],
        ",".join(step.up_revision_ids) or "base",
    )


def stamp_entries(
    graph: Mapping[str, tuple[str, ...]],
    source: Sequence[str],
    destination: Sequence[str],
    checksums: Mapping[str, str],
    started_at: datetime,
    duration_ms: int,
) -> list[Entry]:
    """What a stamp from ``source`` to ``destination`` did, as ledger rows: ``stamped``
    (with the file's checksum) for each revision it marks applied, ``unstamped`` for each
    it marks not applied, both with ``detail`` ``stamp FROM -> TO``. Pure."""
    from runner.plan import applied

    before, after = applied(graph, source), applied(graph, destination)
    detail = f"stamp {','.join(source) or 'base'} -> {','.join(destination) or 'base'}"
    return [
        Entry(rev, "stamped", checksums.get(rev), started_at, duration_ms, detail)
        for rev in sorted(after - before)
    ] + [
        Entry(rev, "unstamped", checksums.get(rev), started_at, duration_ms, detail)
        for rev in sorted(before - after)
    ]
