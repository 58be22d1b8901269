"""The side watch: one thread and one session of its own that look at the migrating backend
while revisions run, never touching the migrating connection.

- Every ``look_every_s`` (see :func:`runner.limits.watch_every`) while a revision runs, one
  row of ``pg_stat_activity``: whether the backend waits on a lock, and only then who blocks it
  (``pg_blocking_pids`` takes the lock manager's locks briefly), kept in :attr:`Watch.last`
  so that a ``lock_timeout`` is reported with the blocker's name.
- Every ``progress_every_s`` of a revision's run, one query (the backend's
  ``pg_stat_activity`` row and its ``pg_stat_progress_*`` rows), handed to ``report`` as the
  fields of a ``revision.progress`` event (:mod:`runner.progress`).

Another role's backend shows its state and progress only to a role with the privileges of
``pg_read_all_stats``; without them the event says so. Errors end the watch quietly: it only
adds diagnostics, the migration itself reports real trouble.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runner import progress
from runner.database.activity import QUERY_SHOWN, shown_query
from runner.errors import RunnerError

_BLOCKER_COLUMNS = """b.pid, b.application_name, host(b.client_addr) AS client_addr, b.state,
       round(extract(epoch FROM now() - b.xact_start))::int AS transaction_open_s,
       CASE WHEN b.query = '<insufficient privilege>' THEN 'hidden: needs pg_read_all_stats'
            ELSE left(regexp_replace(b.query, '\\s+', ' ', 'g'), 2000) END AS query"""
#: who blocks backend %s; pg_blocking_pids only while it waits on a lock (or its wait is
#: hidden from us: another role's backend without pg_read_all_stats)
BLOCKERS_SQL = f"""
SELECT {_BLOCKER_COLUMNS}
FROM pg_stat_get_activity(%s) w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
JOIN pg_stat_activity b ON b.pid = blocking.pid
WHERE w.wait_event_type = 'Lock' OR w.wait_event_type IS NULL ORDER BY b.pid
"""
#: the progress views and the server version that has them
PROGRESS_VIEWS = {
    "create_index": 120000,
    "cluster": 120000,
    "copy": 140000,
    "vacuum": 90600,
    "analyze": 130000,
}


def progress_sql(server_version: int) -> str:
    """One row: the backend's activity and, as JSON, its row of each progress view the
    server has."""
    views = "".join(
        f",\n  (SELECT to_jsonb(p) FROM pg_stat_progress_{view} p WHERE p.pid = a.pid) AS {view}"
        for view, since in PROGRESS_VIEWS.items()
        if server_version >= since
    )
    return (
        "SELECT a.state, a.wait_event_type, a.wait_event,\n"
        "  round(extract(epoch FROM now() - a.query_start)::numeric, 1)::float AS statement_s"
        f"{views}\nFROM pg_stat_get_activity(%s) a"
    )


class Watch:
    """The side watch of one run (all its attempts). :meth:`follow` names the backend to
    watch (None: none), :meth:`track` the revision in flight (None: between revisions).
    ``report(revision, elapsed_s, fields)`` is called from the watch's thread. Safe to
    :meth:`stop` twice; after it returns, ``report`` is not called again."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        look_every_s: float | None,
        progress_every_s: float | None,
        report: Callable[[str, float, dict[str, Any]], None],
    ) -> None:
        self.look_every_s, self.progress_every_s = look_every_s, progress_every_s
        self.last: list[dict[str, Any]] = []
        self.last_at = 0.0  # when ``last`` was seen (time.monotonic)
        self.pid: int | None = None
        self._revision: tuple[str, float] | None = None
        self._connect, self._report = connect, report
        self._stop = threading.Event()
        self._reporting = threading.Lock()  # stop() waits for a report being written
        self._thread = threading.Thread(target=self._run, daemon=True, name="side-watch")
        if look_every_s or progress_every_s:
            self._thread.start()

    def follow(self, pid: int | None) -> None:
        self.pid, self.last = pid, []

    def seen_since(self, began: float) -> list[dict[str, Any]]:
        """The blockers last seen, if seen after ``began`` (time.monotonic: when the
        statement that gave up started); else none: those blocked an earlier statement,
        and naming them for this one would report what was not observed."""
        last, at = self.last, self.last_at
        return last if at >= began else []

    def track(self, revision: str | None) -> None:
        self._revision = (revision, time.monotonic()) if revision else None

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                conn.autocommit = True  # a fresh pg_stat_activity snapshot each look
                self._loop(conn, progress_sql(conn.info.server_version))
        except (psycopg.Error, RunnerError):  # RunnerError: no session within the budget
            return

    def _loop(self, conn: psycopg.Connection[Any], progress_query: str) -> None:
        tick = self.look_every_s or min(0.5, max(0.05, (self.progress_every_s or 1) / 4))
        reported: tuple[str, float, int] | None = None  # revision, its start, reports
        before: progress.Sample | None = None
        while not self._stop.wait(tick):
            pid, revision = self.pid, self._revision
            if pid is None or revision is None:  # only while a revision runs
                continue
            if self.look_every_s:
                self._look(conn, pid)
            if not self.progress_every_s:
                continue
            if reported is None or reported[:2] != revision:
                reported, before = (*revision, 0), None
            elapsed = time.monotonic() - revision[1]
            if elapsed >= (reported[2] + 1) * self.progress_every_s:
                before = self._progress(conn, pid, progress_query, revision[0], elapsed, before)
                reported = (revision[0], revision[1], reported[2] + 1)

    def _look(self, conn: psycopg.Connection[Any], pid: int) -> list[dict[str, Any]]:
        rows = conn.cursor(row_factory=dict_row).execute(BLOCKERS_SQL, (pid,)).fetchall()
        if rows:  # ``last`` first: seen_since reads ``last_at`` first (another thread)
            self.last = [shown_query(row, QUERY_SHOWN) for row in rows]
            self.last_at = time.monotonic()
        return self.last if rows else []

    def _progress(
        self,
        conn: psycopg.Connection[Any],
        pid: int,
        query: str,
        revision: str,
        elapsed: float,
        before: progress.Sample | None,
    ) -> progress.Sample | None:
        row = conn.cursor(row_factory=dict_row).execute(query, (pid,)).fetchone()
        if row is None:  # the backend is gone: the migration reports that
            return before
        now = progress.sample(row, time.monotonic())
        fields = progress.fields(row, now, before)
        if row.get("wait_event_type") == "Lock":
            fields["blockers"] = self._look(conn, pid)
        with self._reporting:
            if not self._stop.is_set():
                self._report(revision, round(elapsed, 1), fields)
        return now

    def stop(self) -> None:
        self._stop.set()
        with self._reporting:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=2)
