"""Waiting for the database: what is retried, what fails fast."""

from __future__ import annotations

import time

import pytest

from devtools.pgcluster import free_port
from runner.config.database_url import ConnectionSpec
from runner.database.connect import classify, wait_for_database
from runner.errors import ConnectionRejected, DatabaseUnreachable
from runner.observe import logs


@pytest.mark.parametrize(
    "message, kind",
    [
        ('connection to server at "10.0.0.1", port 5432 failed: Connection refused', "refused"),
        ("failed to resolve host 'db.internal': [Errno -2] Name or service not known", "dns"),
        ('could not translate host name "db" to address', "dns"),
        ("connection timeout expired", "timeout"),
        ("FATAL:  the database system is starting up", "starting_up"),
        ("FATAL:  the database system is shutting down", "shutting_down"),
        ("FATAL:  the database system is in recovery mode", "recovering"),
        ("FATAL:  sorry, too many clients already", "too_many_connections"),
        (
            "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
            "too_many_connections",
        ),
        ("server closed the connection unexpectedly", "reset"),
        ("something never seen before", "other"),
    ],
)
def test_transient_failures_are_retried(message, kind):
    failure = classify(message)
    assert failure.transient and failure.kind == kind


@pytest.mark.parametrize(
    "message, kind, setting",
    [
        ('FATAL:  password authentication failed for user "app"', "bad_password", "DB_PASSWORD"),
        ('FATAL:  database "nope" does not exist', "database_missing", "DB_NAME"),
        ('FATAL:  role "nobody" does not exist', "role_missing", "DB_USER"),
        ("fe_sendauth: no password supplied", "no_password", "DB_PASSWORD"),
        (
            'FATAL:  no pg_hba.conf entry for host "10.1.1.1", user "app", database "d", no encryption',
            "not_allowed",
            "DB_SSLMODE",
        ),
        ('root certificate file "/nope.pem" does not exist', "ssl_config", "DB_SSLROOTCERT"),
        ("SSL error: certificate verify failed", "ssl_config", "DB_SSLROOTCERT"),
        ("server does not support SSL, but SSL was required", "ssl_config", "DB_SSLMODE"),
    ],
)
def test_fatal_failures_fail_fast_naming_the_setting(message, kind, setting):
    failure = classify(message)
    assert not failure.transient and failure.kind == kind
    assert setting in failure.hint


def _spec(server, **kw):
    base = dict(
        host=server.host,
        port=server.port,
        dbname="postgres",
        user=server.user,
        password=server.password,
    )
    return ConnectionSpec(**(base | kw))


def test_connects_to_a_writable_server_in_autocommit(server):
    connected = wait_for_database(
        _spec(server),
        budget_s=5,
        connect_timeout_s=2,
        max_interval_s=1,
        application_name="test-runner",
        log=logs.get(),
    )
    with connected.conn as conn:
        assert connected.attempts == 1
        assert conn.autocommit
        assert conn.execute("SHOW application_name").fetchone()[0] == "test-runner"
        assert conn.execute("SHOW client_connection_check_interval").fetchone()[0] == "2s"


def test_wrong_password_raises_rejected_without_retrying(server):
    started = time.monotonic()
    with pytest.raises(ConnectionRejected) as err:
        wait_for_database(
            _spec(server, password="wrong"),
            budget_s=30,
            connect_timeout_s=2,
            max_interval_s=1,
            application_name="t",
            log=logs.get(),
        )
    assert time.monotonic() - started < 15  # far below the 30 s budget: no retries
    assert err.value.fields["error_kind"] == "bad_password"


def test_refused_connection_is_retried_until_the_budget_is_spent():
    started = time.monotonic()
    spec = ConnectionSpec(host="127.0.0.1", port=free_port(), dbname="d", user="u", password="p")
    with pytest.raises(DatabaseUnreachable) as err:
        wait_for_database(
            spec,
            budget_s=1.5,
            connect_timeout_s=2,
            max_interval_s=0.5,
            application_name="t",
            log=logs.get(),
        )
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 8
    assert err.value.fields["attempts"] >= 2
    assert err.value.fields["last_error_kind"] == "refused"
