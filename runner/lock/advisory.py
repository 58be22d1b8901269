"""The migration lock: a session-level PostgreSQL advisory lock on the connection that runs
the migrations.

Contract:
- The lock is held by one session, outside any migration transaction, until
  :meth:`MigrationLock.release` (or until the session ends, if the process dies).
- A waiter never sits inside ``pg_advisory_lock``: it polls ``pg_try_advisory_lock`` from
  an autocommit session, so between tries it holds no transaction and no snapshot (a blocked
  ``pg_advisory_lock`` deadlocks with the holder's ``CREATE INDEX CONCURRENTLY``). The
  holder sends a NOTIFY on release, so a waiter proceeds at once; a jittered, growing poll
  covers a holder that died without saying so.
- The wait is bounded; on timeout :class:`LockTimeout` names the holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from runner.backoff import LOCK_POLL
from runner.database.activity import shown_query
from runner.errors import LockTimeout, name_sessions
from runner.lock.pooler import pooler_error

if TYPE_CHECKING:
    from runner.observe.logs import Log

REPORT_EVERY_S = 5.0
POLL_MAX_S = LOCK_POLL.max_s
HOLDER_QUERY_SHOWN = 80


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def guard_key(key: int) -> int:
    """The key a migrating session holds when it is not the one holding ``key`` (env.py's
    own connection: see :mod:`runner.lock.guard`). A runner that takes ``key`` waits until no
    session holds this one: a revision still running for a runner that lost its lock
    session is never run alongside."""
    return lock_key(f"{key}:migrating")


def _key_params(key: int) -> dict[str, int]:
    return {"classid": (key >> 32) & 0xFFFFFFFF, "objid": key & 0xFFFFFFFF}


def channel_for(key: int) -> str:
    """The LISTEN/NOTIFY channel on which the holder announces the release of ``key``."""
    return f"migration_runner_{key & 0xFFFFFFFFFFFFFFFF:016x}"


_HELD = """
EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid = %(classid)s::int8::oid AND objid = %(objid)s::int8::oid)"""
STRANDED_WAIT_S = 5.0
_HOLDERS_OF_KEY = """l.locktype = 'advisory' AND granted AND objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = %(classid)s::int8::oid AND l.objid = %(objid)s::int8::oid
        AND l.pid <> pg_backend_pid()"""
_MINE = """
EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND pid = pg_backend_pid()
        AND classid = {classid}::int8::oid AND objid = {objid}::int8::oid)"""
#: take the lock, unless this server session holds it already: then it is another client's,
#: and a pooler in transaction mode lends one server session to several clients (a session
#: lock is re-entrant: both would think they hold it); one statement, so no other client's
#: statement can come between the look and the take
TRY_SQL = f"""
WITH mine AS MATERIALIZED (SELECT {_MINE.format(classid="%(key_classid)s", objid="%(key_objid)s")}
                           AS already)
SELECT CASE WHEN already THEN false ELSE pg_try_advisory_lock(%(key)s) END, {_HELD}, already
FROM mine"""


#: what :func:`require_held_sql` fails with when the session does not hold the lock
NOT_HELD = "migration-runner: this server session does not hold the migration lock"


def require_held_sql(key: int) -> str:
    """A statement (literals: every driver's parameter style differs) that fails unless this
    server session holds the advisory lock ``key`` (the error names :data:`NOT_HELD`, see
    :func:`is_not_held`): a revision's transaction runs it before its COMMIT, in the same
    message as its ledger rows and the COMMIT, so that no revision commits on a server
    session without the lock (a pooler in transaction mode may run the transaction on
    another one) and the check costs no round trip of its own. A failing statement skips
    the rest of the message and aborts the transaction. The failure is a cast evaluated
    only in the branch taken: the text includes the (stable, so never constant-folded)
    backend pid."""
    params = _key_params(key)
    mine = _MINE.format(classid=params["classid"], objid=params["objid"])
    return (
        f"SELECT CASE WHEN {mine} THEN true "
        f"ELSE ('{NOT_HELD} (pid ' || pg_backend_pid() || ')')::boolean END"
    )


def is_not_held(exc: BaseException) -> bool:
    """Whether ``exc`` (however a driver or SQLAlchemy wrapped it) is the failure of
    :func:`require_held_sql`."""
    return any(NOT_HELD in str(e) for e in (exc, getattr(exc, "orig", None), exc.__cause__) if e)


GUARDED_SQL = f"SELECT {_HELD}"

HOLDERS_SQL = """
SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.usename AS user,
       a.state, round(extract(epoch FROM now() - a.backend_start))::int AS connected_for_s,
       round(extract(epoch FROM now() - a.state_change))::int AS state_for_s,
       CASE WHEN a.query = '<insufficient privilege>' THEN 'hidden: needs pg_read_all_stats'
            ELSE left(regexp_replace(a.query, '\\s+', ' ', 'g'), 2000) END AS query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %(classid)s::int8::oid AND l.objid = %(objid)s::int8::oid
ORDER BY a.pid
"""


class MigrationLock:
    """The advisory lock ``name`` on ``conn`` (an autocommit psycopg connection)."""

    def __init__(
        self, conn: psycopg.Connection[Any], name: str, log: Log, rng: random.Random | None = None
    ) -> None:
        self.conn = conn
        self.name = name
        self.key = lock_key(name)
        self.channel = channel_for(self.key)
        self.held = False
        self.log = log
        self._rng = rng or random.Random()

    def try_acquire(self) -> bool:
        """Take the lock if free; True once it is ours and no migration of a runner that
        lost it is still running (:func:`guard_key`). Holding the lock while that one ends
        keeps everyone else out meanwhile."""
        guard = _key_params(guard_key(self.key))
        if self.held:
            row = self.conn.execute(GUARDED_SQL, guard).fetchone()
            return not (row and row[0])
        mine = {f"key_{k}": v for k, v in _key_params(self.key).items()}
        row = self.conn.execute(TRY_SQL, {"key": self.key, **guard, **mine}).fetchone()
        if row and row[2]:
            raise pooler_error(
                "its server session already held the migration lock for another client"
            )
        self.held = bool(row and row[0])
        return self.held and not (row and row[1])

    def acquire(self, budget_s: float) -> int:
        """Take the lock within ``budget_s`` seconds; return how long we waited, in ms.

        Raises :class:`LockTimeout` naming the holder(s) when the budget is spent.
        """
        started = time.monotonic()
        if self.try_acquire():
            self.log.info("lock.acquired", lock=self.name, key=self.key, waited_ms=0)
            return 0
        self.conn.execute(f'LISTEN "{self.channel}"')
        deadline = started + budget_s
        next_report = started
        polls = 1  # the fallback poll's attempt number (see runner.backoff.LOCK_POLL)
        try:
            # try again now that we listen: a release between the first try and the LISTEN
            # sent its NOTIFY to nobody
            while not self.try_acquire():
                now = time.monotonic()
                if now >= next_report:
                    self.log.info(
                        "lock.waiting",
                        lock=self.name,
                        key=self.key,
                        waited_s=round(now - started, 1),
                        holders=self.holders(),
                    )
                    next_report = now + REPORT_EVERY_S
                if now >= deadline:
                    raise self._timeout(budget_s)
                poll = LOCK_POLL.delay(polls, self._rng)
                timeout = max(0.0, min(poll, deadline - now, next_report - now))
                polls += 1
                for _notify in self.conn.notifies(timeout=timeout, stop_after=1):
                    polls = 1  # the holder spoke: its successor is likely soon
            waited_ms = int((time.monotonic() - started) * 1000)
            self.log.info("lock.acquired", lock=self.name, key=self.key, waited_ms=waited_ms)
        except BaseException:
            if self.held and self.session_usable():  # waited on behind a stopping migration
                self.release()
            raise
        finally:
            if self.session_usable():
                self.conn.execute(f'UNLISTEN "{self.channel}"')
        return waited_ms

    def holders(self) -> list[dict[str, Any]]:
        """Who holds the lock now (pid, application_name, client address, ...); once it is
        ours, who still migrates for a runner that lost it."""
        params = _key_params(guard_key(self.key) if self.held else self.key)
        cur = self.conn.cursor(row_factory=dict_row)
        return [shown_query(row, HOLDER_QUERY_SHOWN) for row in cur.execute(HOLDERS_SQL, params)]

    def release(self) -> None:
        """Release the lock and wake the waiters. Safe to call twice, and after the session
        died (PostgreSQL released the lock with the session)."""
        if not self.held:
            return
        self.held = False
        if not self.session_usable():
            self.log.info("lock.released", lock=self.name, by="session_end")
            return
        for attempt in (1, 2):
            try:
                row = self.conn.execute(
                    "SELECT pg_advisory_unlock(%s), pg_notify(%s, '')", (self.key, self.channel)
                ).fetchone()
                break
            except psycopg.errors.QueryCanceled:  # a late cancel meant for the migration
                if attempt == 2:
                    raise
        if row and row[0]:
            self.log.info("lock.released", lock=self.name, by="unlock")
            return
        stranded = self._end_stranded()
        self.log.warning(
            "lock.release_unexpected",
            lock=self.name,
            detail="pg_advisory_unlock returned false: this server session did not hold the "
            "lock (a pooler in transaction mode lent the one that did to another client)"
            + (f"; ended server session(s) {stranded}, which held it" if stranded else ""),
        )

    def _end_stranded(self) -> list[int]:
        """End the server sessions still holding the lock this runner took (only a pooler in
        transaction mode can leave it on one this session no longer reaches): else it would
        stay held for as long as the pooler keeps that server connection, and every next
        runner would wait for it in vain. Only while idle (the pooler may have lent it to
        another client's transaction: that one must not be cut), for at most
        ``STRANDED_WAIT_S``. The pids that were ended."""
        ended: list[int] = []
        deadline = time.monotonic() + STRANDED_WAIT_S
        with contextlib.suppress(psycopg.Error):
            while time.monotonic() < deadline:
                rows = self.conn.execute(
                    "SELECT l.pid, CASE WHEN a.state = 'idle' THEN pg_terminate_backend(l.pid) END "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    f"WHERE {_HOLDERS_OF_KEY}",
                    _key_params(self.key),
                ).fetchall()
                ended += [pid for pid, done in rows if done]
                if all(done for _pid, done in rows):  # none left, or all ended
                    break
                time.sleep(0.05)
        return ended

    def session_usable(self) -> bool:
        """Whether the session can run a statement now (not closed, broken or mid-query)."""
        return (
            not self.conn.closed
            and not self.conn.broken
            and self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )

    def _timeout(self, budget_s: float) -> LockTimeout:
        holders = self.holders()
        who = name_sessions(
            holders,
            lambda h: (
                f"{h['client_addr'] or 'local'}, connected {h['connected_for_s']} s, {h['state']}"
            ),
        )
        return LockTimeout(
            f"migration lock {self.name!r} not acquired within MIGRATION_LOCK_WAIT_TIMEOUT="
            f"{budget_s:g} s; held by {who}. Another migration may still be running; if that "
            "session is stuck, end it with pg_terminate_backend(pid), or raise the timeout",
            lock=self.name,
            key=self.key,
            holders=holders,
        )
