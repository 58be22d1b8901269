"""What a failed migration step means: the classification of an exception raised while
revisions ran into the error the CLI reports (and so its exit code). Pure: the errors of
every driver (psycopg 3, psycopg2, asyncpg, as SQLAlchemy wraps them) are recognised by
SQLSTATE (``sqlstate``, or psycopg2's ``pgcode``) and class name, not imported.

- ``55P03`` (lock_not_available: ``lock_timeout``) -> :class:`MigrationBlocked` (exit 9),
  naming the blockers the watch saw;
- a lost session (the lock session closed/broken; class ``08`` connection_exception,
  ``57P01``-``57P03`` shutdowns; SQLAlchemy's disconnect detection; an OperationalError
  or InterfaceError without SQLSTATE) -> :class:`ConnectionLost` (exit 10);
- an error without SQLSTATE raised by the runner's own code (the innermost frame that is
  not a library's is in the runner package), even inside a hook Alembic called ->
  :class:`RunnerBug` (exit 1);
- anything else raised before any revision started (env.py's own code: an import, a
  configure() argument, a syntax error) -> :class:`EnvPyFailed` (exit 7), naming env.py's
  file and line and saying that no revision started;
- anything else -> :class:`MigrationFailed` (exit 6), with a hint on ``57014``
  (query_canceled: ``statement_timeout``).

An error in a revision that ran an ``autocommit_block`` (a ``backfill()`` runs its batches
in one) becomes :class:`MigrationFailed` saying exactly what stays: the statements that had
committed (those before the block, which Alembic commits on entering it, and those of the
block that succeeded), the backfills' committed batches and rows, what the failure left
behind (INVALID indexes), what was rolled back (the statements of the revision's open
transaction), and the recovery (make what stays safe to run again, or undo it, then run
again). :func:`not_rolled_back` says the same for a signal.
"""

from __future__ import annotations

import dataclasses
import os
import sysconfig
import types
from collections.abc import Mapping, Sequence
from typing import Any

from runner.errors import (
    ConnectionLost,
    EnvPyFailed,
    MigrationBlocked,
    MigrationFailed,
    RunnerBug,
    RunnerError,
    ScriptsInvalid,
    first_line,
    name_sessions,
)

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
#: admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now
SESSION_ENDED = ("57P01", "57P02", "57P03")
CONNECTION_EXCEPTION = "08"  # the SQLSTATE class
#: a lock_timeout whose blocker the side watch never saw (it fired between two looks): the
#: blocker may well still be there, so never "gone"
NOT_IDENTIFIED = (
    "a session not identified (the lock_timeout fired before the side watch saw the wait; "
    "the blocker may still be there: see pg_locks on the revision's tables)"
)

RUNNER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PATHS = sysconfig.get_paths()
STDLIB_DIRS = tuple({os.path.abspath(_PATHS[n]) + os.sep for n in ("stdlib", "platstdlib")})
SITE_DIRS = tuple({os.path.abspath(_PATHS[n]) + os.sep for n in ("purelib", "platlib")})
#: installed packages between the runner and the project's code (a project may be installed
#: in site-packages too: its frames are its own)
LIBRARIES = ("alembic", "sqlalchemy", "psycopg", "psycopg2", "asyncpg", "greenlet", "mako")


@dataclasses.dataclass(frozen=True)
class Where:
    """Where the failure happened: the revision in flight (None: outside revisions), its
    file, whether the migration session is gone, and whether the revision ran an
    autocommit block."""

    revision: str | None = None
    path: str | None = None
    session_lost: bool = False
    autocommit_block: bool = False
    #: env.py's path when no revision had started yet (the failure is env.py's)
    env_py: str | None = None
    #: the failed revision's ``backfill()`` runs (runner.execution.backfill): table,
    #: rows_done, batches, finished; their batches committed
    backfills: tuple[Mapping[str, Any], ...] = ()
    #: statements of the failed revision that committed (autocommit block: they stay)
    committed: tuple[str, ...] = ()
    #: what the failure left in the database (e.g. ``INVALID index public.ix``)
    left: tuple[str, ...] = ()
    #: statements of the failed revision's open transaction: rolled back
    rolled_back: tuple[str, ...] = ()
    #: the plan's kind: a failed revision stays pending (upgrade) or applied (downgrade)
    kind: str = "upgrade"
    #: revisions completed before the failed one in the same transaction (env.py migrating
    #: in one of its own, e.g. ``with engine.begin()``): rolled back with it
    rolled_back_with: tuple[str, ...] = ()
    #: a statement_timeout the runner did not set (the role's or the database's, e.g.
    #: ``"1ms"``), in effect when a statement was cancelled; None: the runner's own
    server_statement_timeout: str | None = None


def classify_failure(
    exc: BaseException, where: Where, blockers: Sequence[Mapping[str, Any]] = ()
) -> RunnerError:
    """The :class:`RunnerError` to report for ``exc`` (a RunnerError passes through)."""
    error = _classify(exc, where, list(blockers))
    if (
        where.autocommit_block
        and where.revision is not None
        and isinstance(error, (MigrationFailed, MigrationBlocked, ConnectionLost))
    ):
        return MigrationFailed(
            f"{_without_rollback(error.message)}. {not_rolled_back(where)}",
            autocommit_block=True,
            **kept_fields(where),
            **error.fields,
        )
    if where.rolled_back_with and isinstance(
        error, (MigrationFailed, MigrationBlocked, ConnectionLost)
    ):
        return type(error)(_with_earlier_rolled_back(error.message, where), **error.fields)
    return error


def _with_earlier_rolled_back(message: str, where: Where) -> str:
    """``message``, saying that the revisions before the failed one in its transaction were
    rolled back with it (instead of that revisions applied before it stay applied)."""
    earlier = ", ".join(where.rolled_back_with)
    said = (
        f"the revisions before it in the same transaction ({earlier}: env.py runs them in one "
        "of its own) were rolled back with it"
    )
    stay = "revisions applied before it stay applied"
    return message.replace(stay, said) if stay in message else f"{message}; {said}"


def _without_rollback(message: str) -> str:
    """An error's message without its claim that the revision was rolled back, and without
    the recovery that follows it (:func:`not_rolled_back` says both)."""
    head = message.replace(" and was rolled back", "", 1)
    for tail in (". Fix the migration", "; PostgreSQL rolls"):
        head = head.split(tail, 1)[0]
    return head


def kept_fields(where: Where) -> dict[str, Any]:
    """The error event's fields for a revision that committed part of itself: the
    statements that stay, the backfills' committed rows and batches, what the failure
    left, the statements rolled back."""
    return {
        "committed_statements": list(where.committed),
        "backfills_kept": [
            {
                "table": b["table"],
                "rows_done": b.get("rows_done", 0),
                "batches": b.get("batches", 0),
                "finished": bool(b.get("finished")),
            }
            for b in where.backfills
        ],
        "left_behind": list(where.left),
        "rolled_back_statements": list(where.rolled_back),
    }


def not_rolled_back(where: Where) -> str:
    """What a revision that ran an autocommit block or a backfill left committed, what was
    rolled back, where the revision stands and the way on, in words. Pure."""
    said = [_backfilled(b) for b in where.backfills]
    if where.committed or not where.backfills:
        said.append(_stays(where))
    elif where.left:
        said.append(f"the failure left {', '.join(where.left)} (drop it)")
    back = (
        f"{len(where.rolled_back)} statement(s) of its open transaction were rolled back: "
        + "; ".join(_short(s) for s in where.rolled_back)
        if where.rolled_back
        else "nothing else of it was in flight"
    )
    stands, again = (
        ("stays applied (not reverted)", "run the downgrade again")
        if where.kind == "downgrade"
        else ("stays pending (not recorded as applied)", "run again")
    )
    resume = (
        "; a backfill continues where its where clause finds rows left" if where.backfills else ""
    )
    return (
        f"NOT fully rolled back: revision {where.revision} committed part of its work, which "
        f"stays: {'; '.join(said)}. {back[0].upper()}{back[1:]}. Revision {where.revision} "
        f"{stands}: make what stays safe to run again (e.g. IF NOT EXISTS) or undo it, fix "
        f"the cause, then {again}{resume}"
    )


def _backfilled(record: Mapping[str, Any]) -> str:
    """One backfill's committed work, in words."""
    rows, batches, table = record.get("rows_done", 0), record.get("batches", 0), record["table"]
    finished = bool(record.get("finished"))
    how = "finished" if finished else f"stopped after {rows} rows"
    return (
        f"its backfill of {table} {how}: {rows} rows of {table} in {batches} batches "
        "committed, each on its own"
        + ("" if finished else " (a batch in flight, if any, was rolled back)")
    )


def _stays(where: Where) -> str:
    """What a failed revision's statements left committed, in words."""
    said = (
        f"{len(where.committed)} statement(s) had committed: "
        + "; ".join(_short(s) for s in where.committed)
        if where.committed
        else "no statement of it had committed"
    )
    if where.left:
        said += f"; the failure left {', '.join(where.left)} (drop it)"
    return said


def _short(statement: str, limit: int = 120) -> str:
    one = " ".join(statement.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _classify(exc: BaseException, where: Where, blockers: list[Mapping[str, Any]]) -> RunnerError:
    if isinstance(exc, RunnerError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    sqlstate = sqlstate_of(exc)
    # not cut here: the log pipeline cuts after redacting (a cut first could leave a
    # secret's prefix that no longer matches it)
    detail = f"{type(orig).__name__}: {first_line(orig)}"
    place = f"the {where.kind}"
    if where.env_py:
        place = f"env.py ({env_py_line(exc, where.env_py)}), before any revision started,"
    elif where.revision:
        place = f"revision {where.revision}" + (f" ({where.path})" if where.path else "")
    fields: dict[str, Any] = {"revision": where.revision, "error_class": type(orig).__name__}
    if sqlstate == LOCK_NOT_AVAILABLE:
        who = name_sessions(  # seen while the statement waited: never looked up after
            blockers,
            lambda b: f"{b['state']}, transaction open {b['transaction_open_s']} s, {b['query']!r}",
            NOT_IDENTIFIED,
        )
        return MigrationBlocked(
            f"{place} could not get its table lock within lock_timeout and was "
            f"rolled back; blocked by {who}",
            blockers=blockers,
            **fields,
        )
    if where.session_lost or _lost(exc, orig, sqlstate):
        return ConnectionLost(
            f"the connection to the database was lost during {place} ({detail}); "
            "PostgreSQL rolls that revision back and frees the lock when it "
            "notices. Run again: it resumes there",
            **fields,
        )
    if (
        where.env_py
        and sqlstate is None
        and env_py_line(exc, where.env_py) != where.env_py
        and not raised_by_runner(exc.__traceback__)  # then plain Alembic would not fail so
    ):
        return EnvPyFailed(  # raised in (or while compiling) env.py itself
            f"{place} failed: {detail}. No revision started: nothing was applied. Fix env.py "
            "(plain `alembic upgrade` fails the same way) and run again",
            env_py=env_py_line(exc, where.env_py),
            error_class=type(orig).__name__,
        )
    if isinstance(orig, (SystemExit, KeyboardInterrupt)):
        detail += (
            " (the migration ended the process itself: a revision must raise an "
            "exception to fail, never sys.exit() or KeyboardInterrupt)"
        )
    elif isinstance(orig, SyntaxError):  # a module env.py or a revision imports
        return ScriptsInvalid(
            f"{place} imports {orig.filename}, which does not compile (line {orig.lineno}: "
            f"{orig.msg}): fix it and run again",
            **fields,
        )
    elif sqlstate is None and raised_by_runner(exc.__traceback__):
        return RunnerBug(
            f"internal error in the runner during {place}: {detail}; the revision "
            "was rolled back. Please report this (MIGRATION_LOG_LEVEL=debug shows "
            "the traceback)",
            **fields,
        )
    return _failed(place, detail, where, sqlstate, fields)


def _failed(
    place: str, detail: str, where: Where, sqlstate: str | None, fields: dict[str, Any]
) -> MigrationFailed:
    """A statement (or the project's code) failed: the transaction rolled back."""
    if sqlstate == QUERY_CANCELED and where.server_statement_timeout:
        detail += (
            f" (the session's statement_timeout, {where.server_statement_timeout}, set for the "
            "role or the database, not by the runner: ALTER ROLE ... RESET statement_timeout, "
            "or a larger one)"
        )
    elif sqlstate == QUERY_CANCELED:
        detail += " (MIGRATION_STATEMENT_TIMEOUT, or the revision's migration_runner option)"
    if where.env_py:
        then = "No revision started: nothing was applied. Fix the cause and run again"
    elif where.kind == "stamp":
        then = "Nothing was stamped. Fix the cause and run again"
    else:
        then = "Fix the migration and run again: revisions applied before it stay applied"
    return MigrationFailed(f"{place} failed and was rolled back: {detail}. {then}", **fields)


def env_py_line(exc: BaseException, env_py: str) -> str:
    """``env.py:LINE`` where ``exc`` left env.py (its innermost frame there, or the line of
    a syntax error in it), else env.py's path."""
    target = os.path.realpath(env_py)
    if isinstance(exc, SyntaxError) and exc.filename and os.path.realpath(exc.filename) == target:
        return f"{env_py}:{exc.lineno}"
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{env_py}:{line}" if line is not None else env_py


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, however wrapped: psycopg 3's and asyncpg's
    ``sqlstate``, psycopg2's ``pgcode``, on the error, SQLAlchemy's ``orig`` or the cause."""
    for candidate in (getattr(exc, "orig", None), exc, exc.__cause__):
        for name in ("sqlstate", "pgcode"):
            value = getattr(candidate, name, None)
            if isinstance(value, str) and len(value) == 5:
                return value
    return None


def _lost(exc: BaseException, orig: BaseException, sqlstate: str | None) -> bool:
    if sqlstate is not None:
        return sqlstate.startswith(CONNECTION_EXCEPTION) or sqlstate in SESSION_ENDED
    return bool(getattr(exc, "connection_invalidated", False)) or any(
        cls.__name__ in ("OperationalError", "InterfaceError") for cls in type(orig).__mro__
    )


def raised_by_runner(tb: types.TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` that is not a library's (the standard library,
    Alembic, SQLAlchemy, the drivers, ``<frozen ...>``) is in the runner package: the
    project's code (env.py, revisions) called from the runner's hooks is the project's."""
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    for filename in reversed(files):
        path = os.path.abspath(filename)
        if path.startswith(RUNNER_DIR):
            return True
        if not _library(filename, path):
            return False
    return False


def _library(filename: str, path: str) -> bool:
    for site in SITE_DIRS:  # first: site-packages may be inside the standard library's dir
        if path.startswith(site):
            return path[len(site) :].split(os.sep)[0] in LIBRARIES
    return filename.startswith("<") or path.startswith(STDLIB_DIRS)
