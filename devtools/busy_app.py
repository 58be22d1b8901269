"""The busy app of the lock-contention test and bench: on its own autocommit session, a SELECT
or an INSERT on ``calls`` every ``every_s``, each query's start and latency recorded."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg


class BusyApp:
    """Queries ``calls`` from a thread of its own between :meth:`start` and :meth:`stop`. The
    first error ends it (in :attr:`errors`); :attr:`samples` holds ``(started, latency)``."""

    def __init__(
        self, conn: psycopg.Connection[Any], every_s: float, *, carry_on: bool = False
    ) -> None:
        self.conn, self.every_s, self.carry_on = conn, every_s, carry_on
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.failed_at: list[float] = []  # the start of each failed query
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="app")

    def start(self) -> BusyApp:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 120) -> None:
        """Stop after the query in flight (cancelled if it is still running at the timeout)."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            self.conn.cancel_safe()
            self._thread.join(timeout=timeout_s)

    @property
    def latencies(self) -> list[float]:
        return [latency for _at, latency in self.samples]

    def between(self, start: float, end: float) -> list[float]:
        """The latencies of the queries that started between ``start`` and ``end``."""
        return [latency for at, latency in self.samples if start <= at <= end]

    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            sql = (
                "SELECT count(*) FROM calls WHERE id > (SELECT max(id) - 50 FROM calls)"
                if n % 2
                else "INSERT INTO calls (caller) VALUES ('app')"
            )
            started = time.monotonic()
            try:
                self.conn.execute(sql)
            except psycopg.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.failed_at.append(started)
                if not self.carry_on:  # stop at the first error, or count it and go on
                    return
            self.samples.append((started, time.monotonic() - started))
            self._stop.wait(self.every_s)
