"""The blocker watch: who blocks the migration session's lock waits, sampled from a session
of its own, so that a ``lock_timeout`` can be reported with the blocker's name."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runner.database.activity import QUERY_SHOWN, shown_query
from runner.errors import RunnerError

BLOCKERS_SQL = """
SELECT pid, application_name, host(client_addr) AS client_addr, state,
       round(extract(epoch FROM now() - xact_start))::int AS transaction_open_s,
       CASE WHEN query = '<insufficient privilege>' THEN 'hidden: needs pg_read_all_stats'
            ELSE left(regexp_replace(query, '\\s+', ' ', 'g'), 2000) END AS query
FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid
"""


class BlockerWatch:
    """Samples every ``every_s`` who blocks backend ``pid``; :attr:`last` is the latest
    non-empty sample. The session is opened in the watcher's thread: the migration does not
    wait for it. Errors end the watch quietly (it only adds diagnostics)."""

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], pid: int, every_s: float
    ) -> None:
        self.pid, self.every_s = pid, every_s
        self.last: list[dict[str, Any]] = []
        self._connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="blocker-watch")
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                while not self._stop.wait(self.every_s):
                    rows = (
                        conn.cursor(row_factory=dict_row)
                        .execute(BLOCKERS_SQL, (self.pid,))
                        .fetchall()
                    )
                    if rows:
                        self.last = [shown_query(row, QUERY_SHOWN) for row in rows]
        except (psycopg.Error, RunnerError):  # RunnerError: no session within the budget
            return  # only diagnostics: the migration itself reports real trouble

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
