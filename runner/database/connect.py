"""Waiting for the database: bounded, jittered retries of what is transient, fail fast on
what is not.

:func:`classify` is the decision (a libpq/psycopg error message in, a :class:`ConnectFailure`
out); :func:`wait_for_database` is the I/O around it. The connection returned is in
autocommit mode, so it holds no transaction or snapshot until a migration begins one.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from runner import backoff
from runner.config.database_url import ConnectionSpec
from runner.errors import ConnectionRejected, DatabaseUnreachable, first_line

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from runner.observe.logs import Log

# How quickly a dead peer is noticed: TCP keepalives on our side, and on the server's side
# (PostgreSQL 14+) a check of our socket while it runs a long statement for us.
# tcp_user_timeout bounds how long sent data may stay unacknowledged: keepalives do not run
# then, so without it a backend whose result went into a partition holds the lock ~15 min.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}
SESSION_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
CLIENT_CHECK_INTERVAL = "2s"  # PostgreSQL 14+


@dataclasses.dataclass(frozen=True)
class ConnectFailure:
    """What a connection error means: a short ``kind``, whether to retry, and what to fix."""

    kind: str
    transient: bool
    hint: str = ""


# (substrings that must all be in the lower-cased message, kind, what to fix). First match wins.
_FATAL = [
    (
        ("password authentication failed",),
        "bad_password",
        "check DB_PASSWORD (or DB_SECRET's password, or the password in DATABASE_URL) and DB_USER",
    ),
    (("no password supplied",), "no_password", "set DB_PASSWORD (or a password in DATABASE_URL)"),
    (("fe_sendauth",), "no_password", "set DB_PASSWORD (or a password in DATABASE_URL)"),
    (
        ("database", "does not exist"),
        "database_missing",
        "check DB_NAME (or the database in DATABASE_URL)",
    ),
    (("role", "does not exist"), "role_missing", "check DB_USER (or the user in DATABASE_URL)"),
    (
        ("no pg_hba.conf entry",),
        "not_allowed",
        "the server refuses this user/database/address (pg_hba.conf); on RDS with rds.force_ssl, "
        "set DB_SSLMODE=require or verify-full",
    ),
    (("not permitted to log in",), "cannot_login", "the role in DB_USER lacks LOGIN"),
    (
        ("permission denied for database",),
        "no_connect_privilege",
        "grant CONNECT on the database to the role in DB_USER",
    ),
    (("root certificate file",), "ssl_config", "check DB_SSLROOTCERT (the RDS CA bundle path)"),
    (
        ("certificate verify failed",),
        "ssl_config",
        "the server certificate does not verify against DB_SSLROOTCERT; use the RDS CA bundle",
    ),
    (
        ("does not match host name",),
        "ssl_config",
        "the certificate does not name DB_HOST: connect to the RDS endpoint name, not an IP",
    ),
    (
        ("server does not support ssl",),
        "ssl_config",
        "the server has no SSL: fix DB_SSLMODE (require/verify-* need SSL)",
    ),
    (("ssl",), "ssl_config", "check DB_SSLMODE and DB_SSLROOTCERT"),
    (
        ("invalid connection option",),
        "bad_option",
        "remove the unknown parameter from DATABASE_URL",
    ),
    (("invalid sslmode",), "bad_option", "fix DB_SSLMODE"),
]
_TRANSIENT = [
    ("connection refused", "refused"),
    # a TLS handshake cut by a restarting server or a load balancer: not an SSL set-up
    # problem (only certificate, verification and configuration failures are fatal)
    ("unexpected eof", "reset"),
    ("eof detected", "reset"),
    ("ssl syscall error", "reset"),
    ("ssl connection has been closed unexpectedly", "reset"),
    ("could not translate host name", "dns"),
    ("failed to resolve host", "dns"),
    ("name or service not known", "dns"),
    ("temporary failure in name resolution", "dns"),
    ("timeout expired", "timeout"),
    ("timed out", "timeout"),
    ("the database system is starting up", "starting_up"),
    ("the database system is not yet accepting connections", "starting_up"),
    ("the database system is shutting down", "shutting_down"),
    ("the database system is in recovery mode", "recovering"),
    ("too many clients", "too_many_connections"),
    ("remaining connection slots are reserved", "too_many_connections"),
    ("too many connections", "too_many_connections"),
    ("server closed the connection unexpectedly", "reset"),
    ("connection reset", "reset"),
    ("no route to host", "network"),
    ("network is unreachable", "network"),
]


def classify(message: str) -> ConnectFailure:
    """Decide whether a connection error is worth retrying. Unknown errors are retried:
    a deploy should not fail on a blip we have not seen before, and the budget bounds it."""
    text = message.lower()
    for needle, kind in _TRANSIENT:
        if needle in text:
            return ConnectFailure(kind, transient=True)
    for needles, kind, hint in _FATAL:
        if all(needle in text for needle in needles):
            return ConnectFailure(kind, transient=False, hint=hint)
    return ConnectFailure("other", transient=True)


class _Transient(Exception):
    def __init__(self, failure: ConnectFailure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure


@dataclasses.dataclass
class Connected:
    conn: psycopg.Connection[Any]
    attempts: int
    elapsed_ms: int


def wait_for_database(
    spec: ConnectionSpec,
    *,
    budget_s: float,
    connect_timeout_s: int,
    max_interval_s: float,
    application_name: str,
    log: Log,
    role: str = "session",
) -> Connected:
    """Connect to a writable primary, retrying transient failures for up to ``budget_s``.

    Raises :class:`ConnectionRejected` at once on a fatal error, and
    :class:`DatabaseUnreachable` when the budget is spent. Each failed attempt is logged
    with its number, kind and the delay before the next one. Every connection the runner
    opens comes through here (``role``: ``session``, the one ``db.connected`` announces;
    ``probe``, ``watch``, ``env.py`` ... for the further ones, named in ``db.connect_failed``).
    """
    started = time.monotonic()
    try:
        conn, attempts = _attempt(spec, connect_timeout_s, application_name), 1
    except ConnectionRejected as rejected:
        rejected.fields["attempts"] = 1
        raise
    except _Transient as first:
        # only a failed first attempt pays for importing the retry machinery (tenacity)
        conn, attempts = _keep_trying(
            first,
            lambda: _attempt(spec, connect_timeout_s, application_name),
            started=started,
            budget_s=budget_s,
            max_interval_s=max_interval_s,
            log=log,
            role=role,
        )
    elapsed_ms = int((time.monotonic() - started) * 1000)
    (log.info if role == "session" else log.debug)(
        "db.connected",
        attempt=attempts,
        elapsed_ms=elapsed_ms,
        role=role,
        server_version=conn.info.server_version,
        backend_pid=conn.info.backend_pid,
    )
    return Connected(conn, attempts, elapsed_ms)


def _keep_trying(
    first: _Transient,
    attempt: Callable[[], psycopg.Connection[Any]],
    *,
    started: float,
    budget_s: float,
    max_interval_s: float,
    log: Log,
    role: str,
) -> tuple[psycopg.Connection[Any], int]:
    """Retry ``attempt`` after its first failure ``first`` (attempt 1, replayed to tenacity so
    that attempt numbers, delays and events are those of one loop) until it connects, fails
    fatally, or ``budget_s`` (counted from ``started``) is spent."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay

    rng = random.Random()
    replay = [first]

    def once() -> psycopg.Connection[Any]:
        if replay:
            raise replay.pop()
        return attempt()

    def next_delay(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        kind = exc.failure.kind if isinstance(exc, _Transient) else "other"
        policy = backoff.for_connect_failure(kind, max_interval_s)
        remaining = budget_s - (time.monotonic() - started)
        return max(0.0, min(policy.delay(state.attempt_number, rng), remaining))

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert isinstance(exc, _Transient)
        log.warning(
            "db.connect_failed",
            attempt=state.attempt_number,
            error_kind=exc.failure.kind,
            error=str(exc),
            next_delay_s=round(state.upcoming_sleep, 3),
            role=role,
        )

    retrying = Retrying(
        retry=retry_if_exception_type(_Transient),
        wait=next_delay,
        stop=stop_after_delay(max(0.0, budget_s - (time.monotonic() - started))),
        before_sleep=log_retry,
        reraise=True,
    )
    attempts = 0
    try:
        for try_ in retrying:
            with try_:
                attempts = try_.retry_state.attempt_number
                conn = once()
    except ConnectionRejected as rejected:
        rejected.fields["attempts"] = attempts
        raise
    except _Transient as exc:
        log.warning(
            "db.connect_failed",
            attempt=attempts,
            error_kind=exc.failure.kind,
            error=str(exc),
            next_delay_s=None,
            role=role,
        )
        raise DatabaseUnreachable(
            f"database not reachable after {attempts} attempts in {budget_s:g} s "
            f"(last error: {exc.failure.kind}: {exc}); check DB_HOST/DB_PORT, the security "
            "groups between this task and RDS, and that the instance is available, or raise "
            "MIGRATION_DB_WAIT_TIMEOUT",
            attempts=attempts,
            last_error_kind=exc.failure.kind,
        ) from None
    return conn, attempts


def open_connection(
    spec: ConnectionSpec, timeout_s: int, application_name: str
) -> psycopg.Connection[Any]:
    """One connection attempt, no retries: for the runner's helper sessions once the
    database is known to be up. Autocommit, no server-side prepared statements (they break
    behind transaction poolers), keepalives on both sides."""
    return _open(spec, timeout_s, application_name)[0]


#: whether a session may migrate here, read by the statement that sets its settings (one
#: round trip, not two)
WRITABLE = ("pg_is_in_recovery()", "current_setting('transaction_read_only')")


def _open(
    spec: ConnectionSpec, timeout_s: int, application_name: str, *also: str
) -> tuple[psycopg.Connection[Any], tuple[Any, ...]]:
    """:func:`open_connection`, and the values of the SQL expressions ``also``."""
    libpq: dict[str, Any] = {**spec.libpq_params(), **KEEPALIVES}
    conn = psycopg.connect(
        **libpq,
        connect_timeout=timeout_s,
        application_name=application_name,
        autocommit=True,
        prepare_threshold=None,
    )
    try:
        settings = dict(SESSION_SETTINGS)
        if conn.info.server_version >= 140000:
            settings["client_connection_check_interval"] = CLIENT_CHECK_INTERVAL
        row = conn.execute(
            "SELECT " + ", ".join([*("set_config(%s, %s, false)" for _ in settings), *also]),
            [item for pair in settings.items() for item in pair],
        ).fetchone()
    except BaseException:
        conn.close()
        raise
    assert row is not None
    return conn, tuple(row[len(settings) :])


#: a rejected IAM token: no password to check, but the role's grant and the caller's policy
IAM_HINT = (
    "with MIGRATION_IAM_AUTH the password is an IAM token: check that DB_USER is granted "
    "rds_iam, that the task role allows rds-db:connect on this user and DB instance, and that "
    "DB_HOST is the instance's endpoint the token was signed for"
)


def _attempt(
    spec: ConnectionSpec, timeout_s: int, application_name: str
) -> psycopg.Connection[Any]:
    try:
        conn, writable = _open(spec, timeout_s, application_name, *WRITABLE)
    except psycopg.Error as exc:
        detail = libpq_reason(exc)
        failure = classify(str(exc))
        if not failure.transient:
            hint = (
                IAM_HINT
                if failure.kind == "bad_password" and spec.password_source
                else failure.hint
            )
            raise ConnectionRejected(
                f"the database refused the connection ({failure.kind}): {detail}; {hint}",
                error_kind=failure.kind,
            ) from None
        raise _Transient(failure, detail) from None
    try:
        _check_writable(*writable)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_writable(in_recovery: bool, read_only: str) -> None:
    """A standby, or an old writer after a failover, is not a place to migrate: retry."""
    if in_recovery:
        raise _Transient(
            ConnectFailure("in_recovery", True),
            "server is a standby (pg_is_in_recovery); "
            "waiting for the writer endpoint to point at the primary",
        )
    if read_only == "on":
        raise _Transient(
            ConnectFailure("read_only", True), "server is read-only (transaction_read_only)"
        )


def libpq_reason(exc: BaseException) -> str:
    """The useful line of a libpq message ("FATAL: ..."), without psycopg's preamble."""
    line = first_line(exc)
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    return line.replace("FATAL:  ", "").strip()
