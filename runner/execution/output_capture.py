"""What the project's own code says while migrations run — ``print()``, writes to
``sys.stdout``/``sys.stderr``, ``warnings``, stdlib logging of its own loggers — becomes
``revision.output`` events (with the revision in flight), so that stdout carries only JSON
lines and everything passes the log redactor.

Alembic's and SQLAlchemy's own loggers keep their usual path (the bridge in
:mod:`runner.observe.logs`). Writes to the file descriptors themselves (a C extension, a child
process inheriting fd 1 or 2, ``os.write(1, ...)``) become the same events where the runner
runs project code inside :func:`runner.observe.descriptors.captured` (which hands its lines
to the innermost active capture).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.observe.logs import Log

#: loggers that are not the project's: they keep the runner's normal log path
LIBRARY_LOGGERS = ("alembic", "sqlalchemy", "runner")


class _Lines(io.RawIOBase):
    """The bytes under a text stream (:func:`_stream`): every complete line (and what is left
    at a flush) becomes a call of ``emit(text)``. Its ``fileno()`` is ``fd`` while
    :func:`runner.observe.descriptors.captured` has made that fd a capture pipe (so
    ``faulthandler.enable()`` or ``subprocess.run(stdout=sys.stdout)`` work and are captured
    too); otherwise there is no fd to give (``io.UnsupportedOperation``, as for any stream
    without one): the real stdout must carry only the runner's lines."""

    def __init__(self, emit: Callable[[str], None], fd: int) -> None:
        super().__init__()
        self._emit, self._fd, self._partial, self._mutex = emit, fd, b"", threading.Lock()
        self.name = "<stdout>" if fd == 1 else "<stderr>"  # as the real ones are named

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        from runner.observe import descriptors

        if descriptors.capturing(self._fd):
            return self._fd
        raise io.UnsupportedOperation("fileno: the output is captured, without an fd here")

    def write(self, data: Any) -> int:
        data = bytes(data)
        with self._mutex:
            *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._emit(line.decode("utf-8", "backslashreplace"))
        return len(data)

    def flush(self) -> None:
        with self._mutex:
            rest, self._partial = self._partial, b""
        if rest:
            self._emit(rest.decode("utf-8", "backslashreplace"))


def _stream(emit: Callable[[str], None], fd: int) -> io.TextIOWrapper:
    """A real text stream (``buffer``, ``fileno()``, ``reconfigure()``, ...) whose lines
    become ``emit`` calls as they are written."""
    return io.TextIOWrapper(
        _Lines(emit, fd), encoding="utf-8", errors="backslashreplace", write_through=True
    )


class OutputCapture:
    """While inside :meth:`active`, user output becomes ``revision.output`` events on
    ``log``, each with ``revision`` (what ``in_flight()`` says: None outside revisions, e.g.
    while env.py is imported), ``stream`` (stdout, stderr, warning or logging) and ``text``."""

    def __init__(self, log: Log, in_flight: Callable[[], str | None]) -> None:
        self._log, self._in_flight = log, in_flight

    def event(self, stream: str, text: str, level: str = "info", **fields: Any) -> None:
        if text.strip():
            getattr(self._log, level)(
                "revision.output",
                revision=self._in_flight(),
                stream=stream,
                text=text.rstrip(),
                **fields,
            )

    def handle_record(self, record: logging.LogRecord) -> bool:
        """A stdlib log record: True when it was the project's and became an event."""
        if record.name.split(".")[0] in LIBRARY_LOGGERS:
            return False
        level = record.levelname.lower()
        self.event(
            "logging",
            record.getMessage(),
            level if level in ("debug", "info", "warning", "error") else "error",
            logger=record.name,
        )
        return True

    def _warning(
        self,
        message: Any,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        self.event(
            "warning", f"{category.__name__}: {message}", "warning", location=f"{filename}:{lineno}"
        )

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        from runner.observe import descriptors, logs

        saved = (sys.stdout, sys.stderr, warnings.showwarning, logs.record_sink)
        descriptors.sinks.append(self._descriptor_line)
        out = _stream(lambda text: self.event("stdout", text), 1)
        err = _stream(lambda text: self.event("stderr", text, "warning"), 2)
        sys.stdout, sys.stderr = out, err
        warnings.showwarning = self._warning
        logs.record_sink = self.handle_record
        try:
            yield
        finally:
            for stream in (out, err):
                with contextlib.suppress(ValueError):  # the project closed it
                    stream.flush()
            sys.stdout, sys.stderr, warnings.showwarning, logs.record_sink = saved
            descriptors.sinks.remove(self._descriptor_line)

    def _descriptor_line(self, stream: str, text: str) -> None:
        """A line written to fd 1 or 2 (:func:`runner.observe.descriptors.captured`)."""
        self.event(stream, text, "info" if stream == "stdout" else "warning")
