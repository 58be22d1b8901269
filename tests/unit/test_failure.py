"""Which exit code a failed revision gets: runner.execution.failure, directly (6, 9 and 10)."""

from __future__ import annotations

import psycopg
import pytest

from runner.errors import (
    ConfigError,
    ConnectionLost,
    EnvPyFailed,
    ExitCode,
    MigrationBlocked,
    MigrationFailed,
)
from runner.execution.failure import Where, classify_failure


class FakeSqlError(Exception):
    """Shaped like a driver error: a SQLSTATE and a message (a real psycopg error cannot be
    built with one outside a server round trip)."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Wrapped(Exception):
    """Shaped like SQLAlchemy's DBAPIError: the driver's error in ``orig``."""

    def __init__(self, orig: Exception) -> None:
        super().__init__(str(orig))
        self.orig = orig


BLOCKER = {
    "pid": 42,
    "application_name": "psql",
    "state": "idle in transaction",
    "transaction_open_s": 12,
    "query": "LOCK accounts",
}


def test_lock_timeout_is_blocked_exit_9_naming_the_blocker():
    error = classify_failure(
        Wrapped(FakeSqlError("canceling statement due to lock timeout", "55P03")),
        Where("r2", "versions/r2.py"),
        [BLOCKER],
    )
    assert isinstance(error, MigrationBlocked) and error.exit_code == ExitCode.MIGRATION_BLOCKED
    assert "revision r2 (versions/r2.py)" in error.message and "pid 42 (psql" in error.message
    assert error.fields["blockers"] == [BLOCKER] and error.fields["revision"] == "r2"


def test_a_lost_session_is_exit_10():
    error = classify_failure(
        FakeSqlError("SSL SYSCALL error: EOF detected", None), Where("r2", session_lost=True)
    )
    assert isinstance(error, ConnectionLost) and error.exit_code == ExitCode.CONNECTION_LOST


def test_a_psycopg_operational_error_without_sqlstate_is_a_lost_connection():
    error = classify_failure(psycopg.OperationalError("server closed the connection"), Where("r1"))
    assert isinstance(error, ConnectionLost)


def test_any_other_error_is_a_failed_migration_exit_6():
    error = classify_failure(
        Wrapped(FakeSqlError('relation "x" does not exist\nLINE 1', "42P01")),
        Where("r3", "versions/r3.py"),
    )
    assert isinstance(error, MigrationFailed) and error.exit_code == ExitCode.MIGRATION_FAILED
    assert 'FakeSqlError: relation "x" does not exist' in error.message
    assert "LINE 1" not in error.message  # one line of the driver's message


def test_statement_timeout_names_the_setting():
    error = classify_failure(
        FakeSqlError("canceling statement due to statement timeout", "57014"), Where("r1")
    )
    assert isinstance(error, MigrationFailed) and "MIGRATION_STATEMENT_TIMEOUT" in error.message


def test_outside_any_revision_the_message_says_the_upgrade():
    assert "the upgrade failed" in classify_failure(ValueError("x"), Where()).message


def test_runner_errors_pass_through_unchanged():
    original = ConfigError("set X")
    assert classify_failure(original, Where("r1")) is original


@pytest.mark.parametrize(
    "exc", [FakeSqlError("lock timeout", "55P03"), FakeSqlError("boom", "XX000")]
)
def test_after_an_autocommit_block_it_is_a_failure_that_says_exactly_what_stays(exc):
    where = Where(
        "r4",
        autocommit_block=True,
        committed=("ALTER TABLE t ADD COLUMN c int",),
        left=("INVALID index public.ix",),
    )
    error = classify_failure(exc, where)
    assert isinstance(error, MigrationFailed) and error.fields["autocommit_block"] is True
    assert "NOT fully rolled back" in error.message and "was rolled back" not in error.message
    assert "committed part of its work, which stays" in error.message
    assert "1 statement(s) had committed: ALTER TABLE t ADD COLUMN c int" in error.message
    assert "left INVALID index public.ix" in error.message
    assert error.fields["committed_statements"] == ["ALTER TABLE t ADD COLUMN c int"]


def test_a_lock_timeout_whose_blocker_was_never_seen_names_nobody_and_never_says_gone():
    error = classify_failure(FakeSqlError("lock timeout", "55P03"), Where("r1"), [])
    assert isinstance(error, MigrationBlocked)
    assert "not identified" in error.message and "gone" not in error.message


def test_blockers_seen_before_the_statement_that_gave_up_are_not_named_for_it():
    from runner.execution.watch import Watch

    watch = Watch(lambda: None, None, None, lambda *_a: None)  # no thread: nothing to look at
    watch.last, watch.last_at = [{"pid": 7, "application_name": "report"}], 10.0
    assert watch.seen_since(9.5) == watch.last  # seen while this statement waited
    assert watch.seen_since(10.5) == []  # seen while an earlier statement waited


BACKFILLED = {"table": "calls", "rows_done": 5000, "batches": 6, "finished": True}


@pytest.mark.parametrize(
    ("kind", "stands", "again"),
    [
        ("upgrade", "r4 stays pending (not recorded as applied)", "then run again"),
        ("downgrade", "r4 stays applied (not reverted)", "then run the downgrade again"),
    ],
)
def test_after_a_backfill_it_says_the_rows_that_stay_and_what_was_rolled_back(kind, stands, again):
    where = Where(
        "r4",
        autocommit_block=True,
        backfills=(BACKFILLED,),
        rolled_back=("CREATE INDEX ix ON calls (x)",),
        kind=kind,
    )
    error = classify_failure(FakeSqlError("boom", "XX000"), where)
    assert "was rolled back" not in error.message and "after 0 rows" not in error.message
    assert "its backfill of calls finished: 5000 rows of calls in 6 batches committed" in (
        error.message
    )
    assert "1 statement(s) of its open transaction were rolled back: CREATE INDEX" in error.message
    assert stands in error.message and again in error.message
    assert error.fields["backfills_kept"] == [BACKFILLED]
    assert error.fields["rolled_back_statements"] == ["CREATE INDEX ix ON calls (x)"]


# --- every driver, by SQLSTATE; the runner's own bugs ------------------------------------------

from runner.execution.failure import RunnerBug, raised_by_runner, sqlstate_of  # noqa: E402


class Psycopg2Shaped(Exception):
    """psycopg2 names the SQLSTATE ``pgcode``."""

    def __init__(self, message: str, pgcode: str | None) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def test_the_sqlstate_is_found_however_the_driver_names_it_and_sqlalchemy_wraps_it():
    assert sqlstate_of(Wrapped(Psycopg2Shaped("lock timeout", "55P03"))) == "55P03"
    assert sqlstate_of(Wrapped(FakeSqlError("x", "57014"))) == "57014"
    caused = RuntimeError("adapted")
    caused.__cause__ = FakeSqlError("asyncpg's own", "42P01")
    assert sqlstate_of(caused) == "42P01"
    assert sqlstate_of(ValueError("no database error")) is None


def test_a_psycopg2_lock_timeout_is_blocked_like_psycopg3s():
    error = classify_failure(
        Wrapped(Psycopg2Shaped("canceling statement due to lock timeout", "55P03")),
        Where("r2"),
        [BLOCKER],
    )
    assert isinstance(error, MigrationBlocked)


@pytest.mark.parametrize("sqlstate", ["57P01", "57P02", "08006", "08003"])
def test_a_terminated_or_broken_session_of_any_driver_is_exit_10(sqlstate):
    assert isinstance(
        classify_failure(Wrapped(Psycopg2Shaped("terminating connection", sqlstate)), Where("r2")),
        ConnectionLost,
    )


def test_sqlalchemys_disconnect_detection_counts_as_lost():
    wrapped = Wrapped(Exception("connection is closed"))
    wrapped.connection_invalidated = True
    assert isinstance(classify_failure(wrapped, Where("r2")), ConnectionLost)


def _raise_from(filename: str) -> BaseException:
    """An exception whose innermost frame is in ``filename``."""
    try:
        exec(compile("raise AttributeError('no attribute cancel')", filename, "exec"))
    except AttributeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_an_error_raised_in_the_runners_own_code_is_an_internal_error_exit_1():
    import runner.execution.run

    bug = _raise_from(runner.execution.run.__file__)
    assert raised_by_runner(bug.__traceback__)
    error = classify_failure(bug, Where("r2", "versions/r2.py"))
    assert isinstance(error, RunnerBug) and error.exit_code == ExitCode.INTERNAL
    assert "internal error in the runner" in error.message and "report" in error.message


def test_the_same_error_raised_in_the_projects_code_is_the_migrations(tmp_path):
    error = classify_failure(_raise_from(str(tmp_path / "versions" / "r2.py")), Where("r2"))
    assert isinstance(error, MigrationFailed)


def _raised_in(path, source):
    path.write_text(source)
    try:
        exec(compile(source, str(path), "exec"), {})
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_an_error_in_env_py_before_any_revision_names_env_py_and_its_line(tmp_path):
    env_py = tmp_path / "env.py"
    exc = _raised_in(env_py, "x = 1\nraise RuntimeError('settings missing')\n")
    error = classify_failure(exc, Where(env_py=str(env_py)))
    assert isinstance(error, EnvPyFailed) and error.exit_code == ExitCode.SCRIPTS_INVALID
    assert f"{env_py}:2" in error.message and "No revision started" in error.message
    assert error.fields["env_py"] == f"{env_py}:2"


def test_a_syntax_error_in_env_py_names_its_line(tmp_path):
    env_py = tmp_path / "env.py"
    env_py.write_text("x = 1\ny = (\n")
    try:
        compile(env_py.read_text(), str(env_py), "exec")
    except SyntaxError as exc:
        error = classify_failure(exc, Where(env_py=str(env_py)))
    assert isinstance(error, EnvPyFailed), error
    assert f"{env_py}:2" in error.message


def test_once_a_revision_started_the_failure_is_the_revisions(tmp_path):
    env_py = tmp_path / "env.py"
    exc = _raised_in(env_py, "raise RuntimeError('late')\n")
    error = classify_failure(exc, Where("a1", "a1.py"))
    assert isinstance(error, MigrationFailed) and "revision a1" in error.message


def test_a_database_error_while_env_py_connects_keeps_its_code(tmp_path):
    error = classify_failure(
        FakeSqlError("terminating connection", "57P01"), Where(env_py=str(tmp_path / "env.py"))
    )
    assert isinstance(error, ConnectionLost)
    assert "env.py" in error.message and "before any revision started" in error.message
