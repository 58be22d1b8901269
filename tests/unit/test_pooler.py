"""What a session reaches (runner.lock.pooler.reached): the server itself when the pid its other
end announced at start-up is the server session's own; otherwise a pooler or proxy, let through
only when declared in session mode."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError, ExitCode
from runner.lock.pooler import pooler_error, reached


@pytest.mark.parametrize("declared", ["none", "session"])
def test_the_server_announcing_its_own_pid_is_the_server_whatever_was_declared(declared):
    assert reached(5882, 5882, declared) == "server"


def test_a_pooler_declared_in_session_mode_is_let_through():
    assert reached(95169328, 5882, "session") == "session_pooler"


def test_an_undeclared_pooler_is_refused_naming_both_pids_and_both_fixes():
    with pytest.raises(ConfigError) as refused:
        reached(1505482271, 5885, "none")
    error = refused.value
    assert error.exit_code == ExitCode.CONFIG
    assert error.fields == {"pooler": "undeclared", "announced_pid": 1505482271, "server_pid": 5885}
    assert "announced backend pid 1505482271" in error.message
    assert "the server session is pid 5885" in error.message
    assert "Point DATABASE_URL/DB_HOST at the database itself" in error.message
    assert "RDS Proxy" in error.message and "MIGRATION_POOLER=session" in error.message


def test_the_transaction_mode_refusal_says_the_declaration_does_not_cover_it():
    error = pooler_error("its server session already held the migration lock for another client")
    assert error.fields == {"pooler": "transaction"}
    assert "MIGRATION_POOLER=session is for a pooler in session mode only" in error.message
