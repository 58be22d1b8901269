"""Signal handling: stop promptly without leaving anything half done.

Every signal a container or a terminal sends to end a process (:data:`STOPPING`: SIGTERM,
SIGINT, SIGHUP, SIGQUIT, SIGPIPE) is handled alike. SIGPIPE also stands for "an output
cannot be written" (the log writer sends it to the process when a write fails, see
:mod:`runner.observe.logs`, which records the stream and the error), and ends the run with
:class:`OutputClosed` (exit 141, :func:`output_closed`: a reader gone, or a full device named
by its errno) instead of :class:`Interrupted` (exit 130). ECS stops a task with SIGTERM, then SIGKILL 30 s later. What a signal does depends on what
the runner is doing, which the runner declares with the context managers below:

- by default (connecting, waiting for the lock) the handler raises :class:`Interrupted`
  at once; the caller closes its session, which releases anything it held;
- inside :meth:`Interrupt.cancelling` (a migration is running) it cancels the in-flight
  statement (re-sending the cancel until the region ends, in case the signal landed just
  before a statement was sent) and lets the failure unwind through the transaction's
  rollback; :meth:`Interrupt.check` raises before any further statement. The cancel starts
  from a helper thread that watches the wakeup fd (:mod:`runner.process.signal_watch`), so it also
  stops a statement of a driver that keeps the main thread inside C (psycopg2);
- inside :meth:`Interrupt.deferred` (releasing the lock, logging the summary) it only
  records the signal.
"""

from __future__ import annotations

import _signal
import contextlib
import errno
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from runner.errors import Interrupted, OutputClosed
from runner.process import signal_watch

#: the signals that end a run, with a summary, a rollback and the lock released
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE)
_STOPPING_NUMBERS = tuple(int(sig) for sig in STOPPING)
#: the C function behind :func:`signal.getsignal`, without its mapping of the result to an
#: enum (30 times as slow: :meth:`Interrupt.reclaim` runs before every statement)
_raw_getsignal = _signal.getsignal
#: undoes a :func:`faulthandler.register` of a signal and says whether there was one: such a
#: C-level handler sits below Python's (:func:`signal.getsignal` still shows the runner's)
#: and does not chain by default, so a SIGTERM would only dump a traceback
_unregister = faulthandler.unregister
#: how :meth:`Interrupt.reclaim` names a handler :func:`faulthandler.register` installed
FAULTHANDLER = "faulthandler.register"

RECANCEL_EVERY_S = 0.5
#: how long a cancelled migration may take to unwind before the last resort (a revision
#: busy in Python never sends the statement a cancel could stop)
STUCK_GRACE_S = 5.0
#: how long the last resort waits for the migration's backends to be ended
STOP_WAIT_S = 3.0

#: signals that arrived before :meth:`Interrupt.install` (see :func:`record_early`)
_early: list[str] = []
#: the parent's pid when the process started (see :func:`parent_at_start`)
_parent_at_start: int | None = None
#: the installed handler (see :meth:`Interrupt.install` and :func:`reclaim`)
_installed: Interrupt | None = None


def record_early() -> None:
    """Record the :data:`STOPPING` signals from the process's first moments (the entry point calls this
    before its imports) until :meth:`Interrupt.install` takes over and honours them: a
    signal then must not kill the process without its summary."""

    global _parent_at_start
    _parent_at_start = os.getppid()

    def record(signum: int, _frame: Any) -> None:
        _early.append(signal.Signals(signum).name)

    for sig in reversed(STOPPING):  # SIGTERM last: once it is caught, every one is
        signal.signal(sig, record)


def parent_at_start() -> int:
    """The parent process's pid as :func:`record_early` saw it (the process's first
    moments), else as it is now: a parent that exits during the imports that follow (boto3's
    take about a second) is still seen to be gone."""
    return _parent_at_start if _parent_at_start is not None else os.getppid()


def early_signal() -> str | None:
    """The first signal :func:`record_early` recorded, if any (for a run that does not
    :meth:`Interrupt.install`, such as ``ecs run``)."""
    return _early[0] if _early else None


def ignore_late_signals() -> None:
    """After the summary: the run is over and said so, a late signal must not change its
    exit code (Python restores the default actions while it shuts down, unless ignored)."""
    for sig in STOPPING:
        signal.signal(sig, signal.SIG_IGN)


#: what made a write to an output fail: ``(stream, exception)`` (see :func:`output_closed`)
Failure = tuple[str, BaseException]
#: errors that mean the output's other end is gone (or was never there), not that it is full
_GONE = {errno.EPIPE, errno.EBADF, None}


def output_closed(failure: Failure | None, stuck: bool = False) -> OutputClosed:
    """The error of a run stopped because an output could not be written (a SIGPIPE, or a
    failed write the log turned into one): a reader gone (``"signal": "SIGPIPE"``), or a
    write refused for another reason (a full device: ``ENOSPC``), named with its errno."""
    stream, exc = failure or ("stdout", None)
    code = getattr(exc, "errno", None)
    then = (
        "the revision in flight did not stop within "
        f"{STUCK_GRACE_S:g} s (busy in Python?), so its backend was terminated"
        if stuck
        else "the revision in flight (if any) was rolled back"
    )
    if code in _GONE:
        return OutputClosed(
            f"{stream} was closed (its reader went away): stopped; {then} and the migration "
            f"lock released. Keep {stream} open until the run ends (e.g. > run.log, not "
            "| head); run again to finish",
            signal="SIGPIPE",
            stream=stream,
            **({"stuck": True} if stuck else {}),
        )
    name = errno.errorcode.get(code or 0, str(code))
    return OutputClosed(
        f"{stream} cannot be written ({name}: {os.strerror(code or 0)}): stopped; {then} "
        f"and the migration lock released. Make room on the device {stream} writes to (or "
        "send it elsewhere); run again to finish",
        stream=stream,
        errno=name,
        **({"stuck": True} if stuck else {}),
    )


class Interrupt:
    def __init__(
        self,
        on_stuck: Callable[[], None] | None = None,
        output_failure: Callable[[], Failure | None] = lambda: None,
    ) -> None:
        self.signal_name: str | None = None
        #: why an output could not be written, when that is what SIGPIPE stands for
        self.output_failure = output_failure
        self._mode = "raise"
        self._cancel: Callable[[], None] | None = None
        self._stop: Callable[[], None] | None = None
        self._generation = 0
        self._cancelling = -1  # the generation whose cancel loop is running
        self._mutex = threading.Lock()
        self._handler: Callable[[int, Any], None] = self._handle  # one bound method, kept
        #: the last resort (the CLI's): report, and end the process
        self.on_stuck = on_stuck

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        """Take over the :data:`STOPPING` signals (main thread only). A signal recorded before (see
        :func:`record_early`) counts as received: :meth:`check` raises."""
        global _installed
        for sig in STOPPING:
            signal.signal(sig, self._handler)
        _installed = self
        signal_watch.watch(self._on_watched)
        if _early and self.signal_name is None:
            self.signal_name = _early[0]

    def _on_watched(self, signum: int) -> None:
        """The side watch saw ``signum`` arrive: cancel the statement in flight only for a
        stopping signal. Any signal with a Python handler reaches the watch (a project's
        SIGUSR1, asyncio's SIGCHLD): those must not cancel a migration."""
        if signum in _STOPPING_NUMBERS:
            self._start_cancelling()

    def reclaim(self) -> tuple[str, ...]:
        """Put the runner's handler back on every :data:`STOPPING` signal that project code
        (env.py, a package it imports, a revision) gave another disposition, in Python
        (:func:`signal.signal`) or below it (:func:`faulthandler.register`, which
        :func:`signal.getsignal` does not show): a SIGTERM must still end with a summary, a
        rollback and the lock released, not kill the process, raise ``KeyboardInterrupt``
        inside the driver or only dump a traceback. Returns what was replaced (``"SIGTERM
        (SIG_DFL)"``, ``"SIGTERM (faulthandler.register)"``), for the caller's warning;
        ``()`` almost always, for five reads of the disposition table and five
        :func:`faulthandler.unregister` that find nothing: ~0.4 µs of CPU in all (half of it
        the unregisters, which no cheaper query can replace), before every statement.
        Main thread only (the only one that can set a handler); elsewhere a no-op."""
        handler = self._handler
        for number in _STOPPING_NUMBERS:  # the C functions, no enum mapping
            if _raw_getsignal(number) is not handler or _unregister(number):
                break
        else:
            return ()
        if threading.current_thread() is not threading.main_thread():
            return ()
        return self._take_back(int(number))

    def _take_back(self, first: int) -> tuple[str, ...]:
        """:meth:`reclaim`'s slow path, from the first signal found replaced (its
        faulthandler registration, if it had one, already undone)."""
        handler, replaced = self._handler, []
        for sig in STOPPING:
            python = signal.getsignal(sig)
            if python is not handler:
                replaced.append(f"{sig.name} ({_disposition(python)})")
            faulted = _unregister(sig)  # restores the action before it; Python's follows
            if faulted or (sig == first and python is handler):
                replaced.append(f"{sig.name} ({FAULTHANDLER})")
            signal.signal(sig, handler)
        return tuple(replaced)

    def error(self) -> Interrupted:
        if self.signal_name == "SIGPIPE":
            return output_closed(self.output_failure())
        return Interrupted(
            f"stopped by {self.signal_name}: the revision in flight (if any) was "
            "rolled back and the migration lock released; run again to finish",
            signal=self.signal_name,
        )

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal has arrived."""
        if self.requested:
            raise self.error()

    @contextlib.contextmanager
    def cancelling(
        self, cancel: Callable[[], None], stop: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """While inside, a signal calls ``cancel`` (from a helper thread) instead of raising,
        again every ``RECANCEL_EVERY_S``. If the region has not ended ``STUCK_GRACE_S``
        after the signal, ``stop`` ends the migration's backends from a side session (the
        server rolls back; at most ``STOP_WAIT_S``) and :attr:`on_stuck` ends the run."""
        self.check()
        saved = self._stop
        self._stop = stop
        try:
            with self._in_mode("cancel", cancel):
                yield
        finally:
            self._stop = saved

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
        threading.Thread(
            target=self._keep_cancelling, args=(cancel, generation), daemon=True, name="cancel"
        ).start()

    def _keep_cancelling(self, cancel: Callable[[], None], generation: int) -> None:
        stop = self._stop
        deadline = time.monotonic() + STUCK_GRACE_S
        while time.monotonic() < deadline:
            if self._generation != generation:
                return
            with contextlib.suppress(Exception):
                cancel()
            time.sleep(RECANCEL_EVERY_S)
        if self._generation == generation and self.on_stuck is not None:
            if stop is not None:  # bounded: the process ends anyway, and the server notices
                stopper = threading.Thread(target=_quietly, args=(stop,), daemon=True)
                stopper.start()
                stopper.join(STOP_WAIT_S)
            self.on_stuck()

    def stuck_error(self) -> Interrupted:
        if self.signal_name == "SIGPIPE":
            return output_closed(self.output_failure(), stuck=True)
        return Interrupted(
            f"stopped by {self.signal_name}: the revision in flight did not stop within "
            f"{STUCK_GRACE_S:g} s of the cancel (busy in Python?), so its backend was "
            "terminated (PostgreSQL rolled it back and freed the lock) and the process ended "
            "without waiting for it. Run again",
            signal=self.signal_name,
            stuck=True,
        )


def reclaim() -> tuple[str, ...]:
    """:meth:`Interrupt.reclaim` of the installed handler (none installed: ``()``)."""
    return _installed.reclaim() if _installed is not None else ()


def reclaimed_warning(replaced: tuple[str, ...]) -> dict[str, Any]:
    """The fields of the warning that says project code replaced the runner's handlers."""
    return {
        "signals": list(replaced),
        "detail": "project code (env.py, a package it imports or a revision) replaced the "
        "runner's handler of these signals; the runner put its own back, so that a stop still "
        "ends with a summary, a rollback and the lock released. Install process-wide signal "
        "handlers in the app's entry point, not at import time",
    }


def _disposition(handler: Any) -> str:
    if handler is signal.SIG_DFL:
        return "SIG_DFL"
    if handler is signal.SIG_IGN:
        return "SIG_IGN"
    if handler is None:
        return "set outside Python"
    return getattr(handler, "__qualname__", None) or type(handler).__name__


def _quietly(call: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        call()
