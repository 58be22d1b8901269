"""The database session every command works through.

:func:`database_session` waits for a writable database (retries, budgets) and yields a
:class:`Session`: the connection, where it came from, and the tables the runner keeps on it.
The session carries values, never the settings: the command layer decides them once
(:class:`Reach`, :class:`~runner.database.version_table.VersionTable`,
:class:`~runner.database.ledger.Ledger`). The migration lock on it is :mod:`runner.lock.holding`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from runner.config.database_url import ConnectionSpec
from runner.database import connect
from runner.database.ledger import Ledger
from runner.database.version_table import VersionTable, read_revision
from runner.errors import ConnectionLost, RunnerError, first_line
from runner.observe.identity import application_name
from runner.outcome import Facts

if TYPE_CHECKING:
    from runner.observe.logs import Log


@dataclasses.dataclass(frozen=True)
class Reach:
    """How a session is reached: the server, how long to wait for it, and where we run."""

    spec: ConnectionSpec
    wait_budget_s: float
    connect_timeout_s: int
    retry_max_interval_s: float
    #: where this runner runs: ``task/<ECS task id>`` or the host name
    where: str

    def connect(self, application_name: str, log: Log, role: str = "session") -> connect.Connected:
        """A session within the wait budget, failures classified alike for every role (under
        load, ``too many clients`` is as transient for a probe as for the first connection)."""
        return connect.wait_for_database(
            self.spec,
            budget_s=self.wait_budget_s,
            connect_timeout_s=self.connect_timeout_s,
            max_interval_s=self.retry_max_interval_s,
            application_name=application_name,
            log=log,
            role=role,
        )


@dataclasses.dataclass
class Session:
    conn: psycopg.Connection[Any]
    reach: Reach
    table: VersionTable
    ledger: Ledger
    log: Log

    @property
    def spec(self) -> ConnectionSpec:
        return self.reach.spec

    @property
    def application_name(self) -> str:
        return application_name(self.reach.where)

    def revision(self) -> tuple[str, ...]:
        return read_revision(self.conn, self.table)

    def helper_connection(self, role: str) -> psycopg.Connection[Any]:
        """A further session, with the same wait budget and classification as the first."""
        return self.reach.connect(f"{self.application_name} {role}"[:63], self.log, role).conn

    def reconnect(self) -> None:
        """Replace a lost session with a new one, within the wait budget: a lock waiter's,
        before it holds anything, or the migrating one that env.py discarded after its
        revisions committed (the lock went with it). The old one is closed."""
        self.conn.close()
        self.conn = self.reach.connect(self.application_name, self.log).conn


@contextlib.contextmanager
def database_session(
    reach: Reach, table: VersionTable, ledger: Ledger, *, facts: Facts, log: Log
) -> Iterator[Session]:
    """Wait for the database and yield a session on it; closed on exit."""
    try:
        connected = reach.connect(application_name(reach.where), log)
    except RunnerError as failed:
        facts.connect_attempts = int(failed.fields.get("attempts", 0))  # type: ignore[call-overload]
        raise
    facts.connect_attempts = connected.attempts
    session = Session(connected.conn, reach, table, ledger, log)
    try:
        yield session
    except psycopg.OperationalError as exc:  # the session died outside a revision
        raise ConnectionLost(
            f"the connection to the database was lost ({first_line(exc)}); "
            "no revision was in flight. Run again",
            error_class=type(exc).__name__,
        ) from None
    finally:
        session.conn.close()
