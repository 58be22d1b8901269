"""Errors a person can act on, each carrying the exit code the CLI returns.

Errors are raised where the fact is known and rendered once, by the CLI, as a
single ``error`` event. Their messages must never contain a secret: build them
from settings names and redacted values, not from DSNs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class ExitCode(enum.IntEnum):
    """The process exit codes, documented in the README. Stable: pipelines act on them."""

    OK = 0
    INTERNAL = 1  # a bug in the runner: please report it
    CONFIG = 2  # a setting is missing or invalid, or the command line is wrong
    UNREACHABLE = 3  # the database did not become reachable within the wait budget
    REJECTED = 4  # the database refused us for good: bad password, unknown database/role, SSL
    LOCK_TIMEOUT = 5  # another runner held the migration lock longer than the lock-wait budget
    MIGRATION_FAILED = 6  # a revision failed and was rolled back
    SCRIPTS_INVALID = 7  # the scripts cannot be loaded or env.py failed before any revision
    DATABASE_AHEAD = 8  # the database is at a revision these scripts do not know
    MIGRATION_BLOCKED = 9  # a revision kept timing out waiting for a table lock (lock_timeout)
    CONNECTION_LOST = 10  # the session died mid-run (failover, network): the revision rolled back
    NOT_AT_HEAD = 11  # `check`: the database has pending revisions (or is empty)
    EDITED_MIGRATION = 12  # an applied revision's file changed since (MIGRATION_STRICT_CHECKSUMS)
    SNAPSHOT_FAILED = (
        13  # MIGRATION_SNAPSHOT: the snapshot before migrating failed; nothing applied
    )
    VERIFY_FAILED = 20  # `verify`: a check of the pre-deployment checklist failed
    LINT_FAILED = 21  # `lint`, `check --lint`, `upgrade --dry-run`: an error-level lint finding
    INTERRUPTED = 130  # SIGTERM, SIGINT, SIGHUP or SIGQUIT: the in-flight revision was rolled back
    OUTPUT_CLOSED = 141  # stdout/the log's stream closed, reader gone or full: stopped as for 130


class RunnerError(Exception):
    """Base of every expected failure. ``str(err)`` is the human message."""

    exit_code: ExitCode = ExitCode.INTERNAL
    #: short machine-readable name, logged as ``error_code``
    code: str = "internal"

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        #: extra structured fields for the error event (must be secret-free)
        self.fields = fields


class ConfigError(RunnerError):
    exit_code = ExitCode.CONFIG
    code = "config"


class UsageError(ConfigError):
    """The command line is wrong."""

    code = "usage"


class AppNotStarted(ConfigError):
    """``upgrade --then``: the migration was applied, the app could not be started."""

    code = "app_not_started"


class PlanDiverged(RunnerError):
    """Alembic would run other steps than the plan: a bug, never run."""

    code = "plan_diverged"


class RunnerBug(RunnerError):
    """The runner's own code failed: a bug to report, never the migration's fault."""

    code = "internal"


class DatabaseUnreachable(RunnerError):
    exit_code = ExitCode.UNREACHABLE
    code = "unreachable"


class ConnectionRejected(RunnerError):
    exit_code = ExitCode.REJECTED
    code = "rejected"


class LockTimeout(RunnerError):
    exit_code = ExitCode.LOCK_TIMEOUT
    code = "lock_timeout"


class MigrationFailed(RunnerError):
    exit_code = ExitCode.MIGRATION_FAILED
    code = "migration_failed"


class ScriptsInvalid(RunnerError):
    exit_code = ExitCode.SCRIPTS_INVALID
    code = "scripts_invalid"


class EnvPyFailed(ScriptsInvalid):
    """The project's env.py failed before any revision started: nothing was applied."""

    code = "env_py_failed"


class DatabaseAhead(RunnerError):
    exit_code = ExitCode.DATABASE_AHEAD
    code = "database_ahead"


class MigrationBlocked(RunnerError):
    exit_code = ExitCode.MIGRATION_BLOCKED
    code = "migration_blocked"


class ConnectionLost(RunnerError):
    exit_code = ExitCode.CONNECTION_LOST
    code = "connection_lost"


class EditedMigration(RunnerError):
    exit_code = ExitCode.EDITED_MIGRATION
    code = "edited_migration"


class SnapshotFailed(RunnerError):
    exit_code = ExitCode.SNAPSHOT_FAILED
    code = "snapshot_failed"


class Interrupted(RunnerError):
    exit_code = ExitCode.INTERRUPTED
    code = "interrupted"


class OutputClosed(Interrupted):
    """stdout (or the log's stream) is closed, its reader went away, or it refuses writes
    (a full device): nobody can read what the run says."""

    exit_code = ExitCode.OUTPUT_CLOSED
    code = "output_closed"


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (or its class name): driver
    messages run on over several lines of context we do not want in a one-line event."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def name_sessions(
    rows: Iterable[Mapping[str, Any]],
    details: Callable[[Mapping[str, Any]], str],
    none: str = "a session that has since gone",
) -> str:
    """How a message names other sessions (pg_stat_activity rows with at least ``pid`` and
    ``application_name``): ``pid N (application, <details>)`` each, or ``none`` when there
    is no row. The default says the session was gone: right only when ``rows`` were looked
    up after the wait ended (a lookup that proved nobody holds the lock any more)."""
    return (
        "; ".join(
            f"pid {row['pid']} ({row['application_name'] or 'no application_name'}, {details(row)})"
            for row in rows
        )
        or none
    )
