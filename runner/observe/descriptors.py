"""What the project's code writes to the file descriptors themselves while it runs — a child
process (``subprocess.run(["sh", "-c", "echo ..."])``) inheriting fd 1 or 2,
``os.write(1, ...)``, a C extension's ``printf`` — becomes lines for the output capture
(:mod:`runner.execution.output_capture`), as its Python-level writes do: stdout keeps
carrying only the runner's own lines, and every line passes the log's redactor.

Inside :func:`captured` (entered only around project code: importing the revisions and the
bootstrap, running env.py, importing model modules; never on a no-op), fds 1 and 2 are
pipes that one thread drains; the runner's log (:class:`runner.observe.logs.Guarded`) writes
to copies of the original fds meanwhile (:func:`runner.observe.logs.move`), so it still
reaches the real stdout and stderr. The stopping signals are held while the fds are swapped,
so every way out (a return, an exception, a signal's ``Interrupted``) puts the original fds
back first; the drain then takes what the pipes hold — a last partial line too — and stops.
A child that outlives the project code keeps a pipe whose reader discards what it writes (it
must never block on a full pipe; its lines would come after the events they belong with).
Bytes that are not UTF-8 are shown escaped (``\\xff``); a line longer than :data:`MAX_LINE`
is cut into several, never across a secret (each piece passes the redactor alone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from runner.observe import logs
from runner.observe.redact import safe_cut

#: where captured lines go, ``(stream, text)``: the innermost output capture's (it pushes
#: its own while active)
sinks: list[Callable[[str, str], None]] = []
STREAMS = {1: "stdout", 2: "stderr"}
#: a line without its newline yet is handed over at this length
MAX_LINE = 65536
#: a longer line is cut only once this much more of it is known (or the longest secret's
#: length, if more): a secret or a password=... that starts before the cut is whole by then
OVERLAP = 4096
#: held while the fds are swapped (those :mod:`runner.process.interrupt` stops a run on)
HELD = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE}
#: the fds :func:`captured` has made pipes, while it has (empty otherwise)
_capturing: list[frozenset[int]] = []


def capturing(fd: int) -> bool:
    """Whether ``fd`` (1 or 2) is a capture pipe now."""
    return bool(_capturing) and fd in _capturing[0]


class _Drain:
    """The thread reading the pipes: lines to ``deliver`` until :meth:`stop`."""

    def __init__(self, reads: dict[int, str], deliver: Callable[[str, str], None]) -> None:
        self.reads, self.deliver = reads, deliver
        self.partial = dict.fromkeys(reads, b"")
        self.stop_r, self.stop_w = os.pipe()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="output-capture", daemon=True)

    def stop(self) -> None:
        """Once the original fds are back: take what the pipes hold, then return."""
        os.write(self.stop_w, b"x")  # its read end stays open until here: never a SIGPIPE
        self.done.wait()
        os.close(self.stop_w)
        os.close(self.stop_r)

    def _run(self) -> None:
        import select

        poller = select.poll()
        for fd in (*self.reads, self.stop_r):
            poller.register(fd, select.POLLIN)
        live, stopping = set(self.reads), False
        while live and not stopping:
            for fd, _ in poller.poll():
                stopping = stopping or fd == self.stop_r
                if fd in live and not self._take(fd):
                    live.discard(fd)
                    poller.unregister(fd)
        poller.unregister(self.stop_r)
        for fd in list(live):  # what is there now; a writer left (a child): no end of file
            os.set_blocking(fd, False)
            with contextlib.suppress(BlockingIOError):
                while self._take(fd):
                    pass
                live.discard(fd)
        for fd in self.reads:
            self._cut(fd, final=True)
            self._line(fd, self.partial[fd])
        self.done.set()
        self._discard(poller, live)

    def _take(self, fd: int) -> bool:
        """One read of ``fd`` into lines: False at its end."""
        data = os.read(fd, MAX_LINE)
        if not data:
            return False
        *lines, self.partial[fd] = (self.partial[fd] + data).split(b"\n")
        for line in lines:
            self._line(fd, line)
        self._cut(fd)
        return True

    def _cut(self, fd: int, final: bool = False) -> None:
        """Hand a line longer than :data:`MAX_LINE` over in pieces, each redacted alone: cut
        where no secret lies across (:func:`runner.observe.redact.safe_cut`), so while more
        may come, only once the line runs on past the cut by the longest secret."""
        if len(self.partial[fd]) <= MAX_LINE:
            return  # the usual case: nothing to cut, nothing to look up
        known = logs.secrets()
        margin = 0 if final else max([OVERLAP, *map(len, known)])
        while len(self.partial[fd]) > MAX_LINE + margin:
            text = self.partial[fd].decode("utf-8", "surrogateescape")  # bytes kept as they are
            if len(text) <= MAX_LINE + margin:
                return
            cut = safe_cut(text, MAX_LINE, known)
            self._line(fd, text[:cut].encode("utf-8", "surrogateescape"))
            self.partial[fd] = text[cut:].encode("utf-8", "surrogateescape")

    def _line(self, fd: int, line: bytes) -> None:
        if line.strip():
            with contextlib.suppress(Exception):  # a line must never stop the drain
                (sinks[-1] if sinks else self.deliver)(
                    self.reads[fd], line.decode("utf-8", "backslashreplace")
                )

    def _discard(self, poller: Any, live: set[int]) -> None:
        """Read until every writer left is gone, dropping it; then close the pipes."""
        with contextlib.suppress(OSError):
            while live:
                for fd, _ in poller.poll():
                    with contextlib.suppress(BlockingIOError):
                        if not os.read(fd, MAX_LINE):
                            live.discard(fd)
                            poller.unregister(fd)
        for fd in self.reads:
            with contextlib.suppress(OSError):
                os.close(fd)


def _hold() -> set[int | signal.Signals]:
    return signal.pthread_sigmask(signal.SIG_BLOCK, HELD)


def _release(mask: set[int | signal.Signals]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


#: fd -> ((st_dev, st_ino) of what it was, a copy of it): made once, never closed, so a
#: thread that logs while the fds are put back still writes to an open descriptor
_copies: dict[int, tuple[tuple[int, int], int]] = {}


def _open_fds() -> dict[int, int]:
    """A copy of each of fds 1 and 2 that is open (the cached one, if it is still of the
    same file)."""
    saved = {}
    for fd in STREAMS:
        try:
            st = os.fstat(fd)
        except OSError:  # started closed: nothing to capture there
            continue
        known = _copies.get(fd)
        if known is None or known[0] != (st.st_dev, st.st_ino):
            known = _copies[fd] = ((st.st_dev, st.st_ino), os.dup(fd))
        saved[fd] = known[1]
    return saved


def _pipe() -> tuple[int, int]:
    """A pipe as large as an unprivileged process may make it (``pipe-max-size``, 1 MiB by
    default, instead of 64 KiB): a burst the drain is slower to read blocks its writer later,
    and one that set the pipe non-blocking fails (``BlockingIOError``) only past that."""
    import fcntl

    r, w = os.pipe()
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/fs/pipe-max-size", "rb") as limit:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, int(limit.read()))
    return r, w


def _swap(deliver: Callable[[str, str], None]) -> tuple[dict[int, int], _Drain, Callable[[], None]]:
    """Pipes on fds 1 and 2, drained; the log moved to the copies of the originals."""
    _flush()
    saved = _open_fds()
    pipes = {fd: _pipe() for fd in saved}
    drain = _Drain({r: STREAMS[fd] for fd, (r, _w) in pipes.items()}, deliver)
    back = logs.move(saved)
    drain.thread.start()
    for fd, (_r, w) in pipes.items():
        os.dup2(w, fd)  # inheritable: a child process writes into the pipe
        os.close(w)
    return saved, drain, back


def _restore(saved: dict[int, int], drain: _Drain, back: Callable[[], None]) -> None:
    _flush()
    for fd, copy in saved.items():
        os.dup2(copy, fd)
    drain.stop()
    back()


@contextlib.contextmanager
def captured() -> Iterator[None]:
    """Capture fds 1 and 2 into the active output capture's events (none active, or already
    capturing: nothing to do)."""
    if _capturing or not sinks:
        yield
        return
    mask = _hold()
    state = None
    try:
        state = _swap(sinks[-1])
        _capturing.append(frozenset(state[0]))
        _release(mask)  # a signal held meanwhile raises here or later: the finally restores
        yield
    finally:
        _hold()
        try:
            if state is not None:
                _capturing.clear()
                _restore(*state)
        finally:
            _release(mask)
