"""The audit ledger: one row per revision applied, reverted, stamped or adopted, next to the
version table.

Rows for a revision are written in the same transaction as the revision itself, so the
ledger can never disagree with the schema. A database that has no ledger gets one the first
time a runner holds the lock, with an ``adopted`` row (and the file's checksum) for every
revision already applied, so later edits of those files are caught too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import Identifier, Literal

OUTCOMES = ("applied", "reverted", "stamped", "adopted")
COLUMNS = ("id", "revision", "outcome", "checksum", "started_at", "finished_at", "duration_ms",
           "runner_version", "ran_on")
WRITTEN = "(revision, outcome, checksum, started_at, duration_ms, runner_version, ran_on)"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row to write: a revision applied, reverted or stamped by this run."""

    revision: str
    outcome: str
    checksum: str | None
    started_at: datetime
    duration_ms: int

    def row(self) -> tuple[Any, ...]:
        return (self.revision, self.outcome, self.checksum, self.started_at, self.duration_ms)


@dataclasses.dataclass(frozen=True)
class Ledger:
    name: str
    schema: str | None
    runner_version: str
    ran_on: str

    @functools.cached_property
    def _same_for_every_row(self) -> str:
        return f", {Literal(self.runner_version).as_string(None)}, {Literal(self.ran_on).as_string(None)})"

    @property
    def qualified(self) -> str:
        return Identifier(*((self.schema,) if self.schema else ()), self.name).as_string(None)

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.qualified,)).fetchone()
        return bool(row and row[0])

    def ensure(self, conn: psycopg.Connection[Any], applied: Iterable[str],
               checksums: Mapping[str, str]) -> int:
        """Create the ledger if missing (autocommit ``conn``, under the migration lock) and
        adopt the revisions already applied. Returns how many rows were adopted."""
        if self.exists(conn):
            return 0
        adopted = sorted(applied)
        with conn.transaction():
            conn.execute(
                f"CREATE TABLE {self.qualified} ("
                "id bigserial PRIMARY KEY, revision text NOT NULL, "
                f"outcome text NOT NULL CHECK (outcome IN ({', '.join(repr(o) for o in OUTCOMES)})), "
                "checksum text, started_at timestamptz NOT NULL, "
                "finished_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "duration_ms integer NOT NULL, runner_version text NOT NULL, ran_on text NOT NULL)")
            conn.execute(f"COMMENT ON TABLE {self.qualified} IS "
                         "'migration-runner: one row per revision applied, reverted, stamped or adopted'")
            for revision in adopted:
                conn.execute(f"INSERT INTO {self.qualified} {WRITTEN} "
                             "VALUES (%s, 'adopted', %s, now(), 0, %s, %s)",
                             (revision, checksums.get(revision), self.runner_version, self.ran_on))
        return len(adopted)

    def write_and_commit(self, dbapi_connection: Any, entries: Sequence[Entry]) -> None:
        """Write ``entries`` and commit, in one round trip, on a driver connection (psycopg
        or psycopg2) inside the transaction that applied them: the rows commit with their
        revisions or not at all. The ledger exists: :meth:`ensure` ran under the lock."""
        dbapi_connection.cursor().execute(self.insert_and_commit(entries))

    def write(self, dbapi_connection: Any, entries: Sequence[Entry]) -> None:
        """Write ``entries`` inside the transaction that applied them, on a driver connection
        that cannot send a COMMIT with them (asyncpg): its own commit follows."""
        dbapi_connection.cursor().execute(self.insert(entries))

    def insert_and_commit(self, entries: Sequence[Entry]) -> str:
        """The statement :meth:`write_and_commit` sends."""
        return f"{self.insert(entries)}; COMMIT"

    def insert(self, entries: Sequence[Entry]) -> str:
        """The INSERT of ``entries``: values as literals (quoted by psycopg), since several
        statements in one message need the simple protocol, and drivers differ on the
        parameter style."""
        rows = ", ".join("(" + ", ".join(Literal(v).as_string(None) for v in entry.row())
                         + self._same_for_every_row for entry in entries)
        return f"INSERT INTO {self.qualified} {WRITTEN} VALUES {rows}"

    def latest(self, conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
        """The most recent row for each revision (empty if there is no ledger)."""
        if not self.exists(conn):
            return {}
        rows = conn.cursor(row_factory=dict_row).execute(
            f"SELECT DISTINCT ON (revision) {', '.join(COLUMNS)} FROM {self.qualified} "
            "ORDER BY revision, id DESC").fetchall()
        return {row["revision"]: row for row in rows}


def edited(latest: Mapping[str, Mapping[str, Any]], checksums: Mapping[str, str],
           applied: Iterable[str]) -> list[dict[str, Any]]:
    """Applied revisions whose file no longer has the checksum recorded when it was applied."""
    found = []
    for revision in sorted(applied):
        row = latest.get(revision)
        if row is None or row["outcome"] == "reverted" or not row["checksum"]:
            continue
        if checksums.get(revision) not in (None, row["checksum"]):
            found.append({"revision": revision, "recorded": row["checksum"],
                          "file": checksums[revision], "recorded_at": str(row["finished_at"])})
    return found
