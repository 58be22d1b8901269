"""The attack-seams round, the pooler rule (MIGRATION_POOLER, promise 10) through a real
PgBouncer: every command that takes the lock, with and without the declaration, and odd
values of the setting. A test here that is xfail (strict) reproduces the round's finding N
("attack-seams finding N"); the others pin what held."""

from __future__ import annotations

import pytest

from runner.errors import ExitCode
from tests.support import pgbouncer
from tests.support.helpers import run, runner_env


@pytest.fixture
def transaction_pool(database, tmp_path):
    yield from pgbouncer.pgbouncer_transaction(database, tmp_path)


@pytest.mark.parametrize(
    ("prepare", "args", "expect_version"),
    [
        (None, ("stamp", "head"), ["a2"]),
        ("a2", ("downgrade", "base"), []),
        ("a2", ("stamp", "a1"), ["a1"]),
        (None, ("upgrade", "--then", "--", "/bin/true"), ["a2"]),
    ],
    ids=["stamp-head", "downgrade-base", "stamp-back", "upgrade-then"],
)
def test_a_wrong_declaration_writes_only_under_the_lock_for_every_writer(
    database, project, transaction_pool, prepare, args, expect_version
):
    """MIGRATION_POOLER=session in front of a transaction pool (the declaration wrong): each
    writer either is refused naming the pooler (2) with the version table as it was or as far
    as the summary says it applied (revisions committed under the lock before one landed on
    another server session), or succeeds with it as asked; never a version row written off the
    lock, never a lock left on a pooled server session."""
    project.audited_chain(["a1", "a2"])
    if prepare:
        assert run(runner_env(database, project), "upgrade", prepare).code == 0
    before = database.version() if database.table_exists("alembic_version") else []
    env = runner_env(
        database,
        project,
        DATABASE_URL=transaction_pool.url(database.name),
        MIGRATION_POOLER="session",
    )
    result = run(env, *args)
    result.check_log_contract()
    result.assert_clean()
    after = database.version() if database.table_exists("alembic_version") else []
    if result.code == ExitCode.CONFIG:
        error = result.event("error")
        assert error.get("pooler") == "transaction", error
        # a revision whose transaction ran on the session holding the lock commits; the first
        # that lands elsewhere is rolled back and refused: what stays is what the summary says
        applied = result.event("summary")["applied"]
        assert after == (applied[-1:] if applied else before), (before, after, applied)
    else:
        assert result.code == 0 and after == expect_version, (result.code, result.stdout)
    assert database.advisory_locks() == 0


@pytest.mark.parametrize("value", ["transaction", "yes", "session ", "pgbouncer"])
def test_an_odd_declaration_is_refused_naming_the_setting(database, project, value):
    """A value the setting does not know, even on a direct connection: exit 2 before
    connecting, the error naming MIGRATION_POOLER and its choices; never an internal error."""
    project.audited_chain(["a1"])
    result = run(runner_env(database, project, MIGRATION_POOLER=value))
    result.check_log_contract()
    message = result.event("error")["message"]
    assert result.code == ExitCode.CONFIG, (result.code, message)
    assert "MIGRATION_POOLER" in message and "session" in message, message
    assert not database.table_exists("alembic_version")
