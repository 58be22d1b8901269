"""SIGTERM/SIGINT handling: stop promptly without leaving anything half done.

ECS stops a task with SIGTERM, then SIGKILL 30 s later. What a signal does depends on what
the runner is doing, which the runner declares with the context managers below:

- by default (connecting, waiting for the lock) the handler raises :class:`Interrupted`
  at once; the caller closes its session, which releases anything it held;
- inside :meth:`Interrupt.cancelling` (a migration is running) it cancels the in-flight
  statement (re-sending the cancel until the region ends, in case the signal landed just
  before a statement was sent) and lets the failure unwind through the transaction's
  rollback; :meth:`Interrupt.check` raises before any further statement. The cancel starts
  from a helper thread that watches the wakeup fd (:mod:`runner.signal_watch`), so it also
  stops a statement of a driver that keeps the main thread inside C (psycopg2);
- inside :meth:`Interrupt.deferred` (releasing the lock, logging the summary) it only
  records the signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from runner import signal_watch
from runner.errors import Interrupted

RECANCEL_EVERY_S = 0.5
RECANCEL_MAX = 20


class Interrupt:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._mode = "raise"
        self._cancel: Callable[[], None] | None = None
        self._generation = 0
        self._cancelling = -1  # the generation whose cancel loop is running
        self._mutex = threading.Lock()

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        """Take over SIGTERM and SIGINT (main thread only)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        signal_watch.watch(lambda _signum: self._start_cancelling())

    def error(self) -> Interrupted:
        return Interrupted(f"stopped by {self.signal_name}: the revision in flight (if any) was "
                           "rolled back and the migration lock released; run again to finish",
                           signal=self.signal_name)

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal has arrived."""
        if self.requested:
            raise self.error()

    @contextlib.contextmanager
    def cancelling(self, cancel: Callable[[], None]) -> Iterator[None]:
        """While inside, a signal calls ``cancel`` (from a helper thread) instead of raising."""
        self.check()
        with self._in_mode("cancel", cancel):
            yield

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside, a signal is only recorded."""
        with self._in_mode("defer", None):
            yield

    @contextlib.contextmanager
    def _in_mode(self, mode: str, cancel: Callable[[], None] | None) -> Iterator[None]:
        saved = (self._mode, self._cancel)
        self._mode, self._cancel = mode, cancel
        self._generation += 1
        try:
            yield
        finally:
            self._mode, self._cancel = saved
            self._generation += 1

    def _handle(self, signum: int, _frame: Any) -> None:
        first = self.signal_name is None
        if first:
            self.signal_name = signal.Signals(signum).name
        if not first or self._mode == "defer":
            return
        if self._mode == "cancel" and self._cancel is not None:
            self._start_cancelling()
            return
        raise self.error()

    def _start_cancelling(self) -> None:
        """In cancel mode, start the cancel loop once per region (from the main thread's
        handler or the wakeup-fd watcher, whichever comes first)."""
        with self._mutex:
            cancel, generation = self._cancel, self._generation
            if self._mode != "cancel" or cancel is None or self._cancelling == generation:
                return
            self._cancelling = generation
        threading.Thread(target=self._keep_cancelling, args=(cancel, generation),
                         daemon=True, name="cancel").start()

    def _keep_cancelling(self, cancel: Callable[[], None], generation: int) -> None:
        for _ in range(RECANCEL_MAX):
            if self._generation != generation:
                return
            with contextlib.suppress(Exception):
                cancel()
            time.sleep(RECANCEL_EVERY_S)
