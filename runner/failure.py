"""What a failed migration step means: the classification of an exception raised while
revisions ran into the error the CLI reports (and so its exit code). Pure: the driver's
errors are recognised by SQLSTATE and class name, not imported.

- ``55P03`` (lock_not_available: ``lock_timeout``) -> :class:`MigrationBlocked` (exit 9),
  naming the blockers the watch saw;
- a lost session (closed/broken, or an OperationalError without SQLSTATE) ->
  :class:`ConnectionLost` (exit 10);
- anything else -> :class:`MigrationFailed` (exit 6), with a hint on ``57014``
  (query_canceled: ``statement_timeout``).

An error in a revision that ran an ``autocommit_block`` becomes :class:`MigrationFailed`
with a note: those statements are not rolled back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from runner.errors import (ConnectionLost, MigrationBlocked, MigrationFailed, RunnerError,
                           first_line, name_sessions)

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


@dataclasses.dataclass(frozen=True)
class Where:
    """Where the failure happened: the revision in flight (None: outside revisions), its
    file, whether the migration session is gone, and whether the revision ran an
    autocommit block."""

    revision: str | None = None
    path: str | None = None
    session_lost: bool = False
    autocommit_block: bool = False


def classify_failure(exc: BaseException, where: Where,
                     blockers: Sequence[Mapping[str, Any]] = ()) -> RunnerError:
    """The :class:`RunnerError` to report for ``exc`` (a RunnerError passes through)."""
    error = _classify(exc, where, list(blockers))
    if where.autocommit_block and where.revision is not None and isinstance(
            error, (MigrationFailed, MigrationBlocked, ConnectionLost)):
        return MigrationFailed(
            f"{error.message}. NOTE: revision {where.revision} ran an autocommit_block, whose "
            "statements are not rolled back: check what it left (e.g. an INVALID index from "
            "CREATE INDEX CONCURRENTLY: drop it) before running again",
            autocommit_block=True, **error.fields)
    return error


def _classify(exc: BaseException, where: Where, blockers: list[Mapping[str, Any]]) -> RunnerError:
    if isinstance(exc, RunnerError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    detail = f"{type(orig).__name__}: {first_line(orig)}"[:500]
    place = "the upgrade"
    if where.revision:
        place = f"revision {where.revision}" + (f" ({where.path})" if where.path else "")
    fields: dict[str, Any] = {"revision": where.revision, "error_class": type(orig).__name__}
    if sqlstate == LOCK_NOT_AVAILABLE:
        who = name_sessions(blockers, lambda b: f"{b['state']}, transaction open "
                                                f"{b['transaction_open_s']} s, {b['query']!r}")
        return MigrationBlocked(f"{place} could not get its table lock within lock_timeout and was "
                                f"rolled back; blocked by {who}", blockers=blockers, **fields)
    if where.session_lost or (_is_operational(orig) and sqlstate is None):
        return ConnectionLost(f"the connection to the database was lost during {place} ({detail}); "
                              "PostgreSQL rolls that revision back and frees the lock when it "
                              "notices. Run again: it resumes there", **fields)
    if sqlstate == QUERY_CANCELED:
        detail += " (MIGRATION_STATEMENT_TIMEOUT, or the revision's migration_runner option)"
    return MigrationFailed(f"{place} failed and was rolled back: {detail}. Fix the migration and "
                           "run again: revisions applied before it stay applied", **fields)


def _is_operational(exc: BaseException) -> bool:
    """psycopg's OperationalError (the runner's driver; psycopg2's errors are reported as
    failures of the revision, as before)."""
    return any(cls.__name__ == "OperationalError" and cls.__module__.split(".")[0] == "psycopg"
               for cls in type(exc).__mro__)
