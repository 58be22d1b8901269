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


class _Lines(io.TextIOBase):
    """A text stream that turns every complete line (and what is left at a flush) into a call
    of ``emit(text)``."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self._emit, self._partial, self._mutex = emit, "", threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        with self._mutex:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._mutex:
            rest, self._partial = self._partial, ""
        if rest:
            self._emit(rest)


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
        out = _Lines(lambda text: self.event("stdout", text))
        err = _Lines(lambda text: self.event("stderr", text, "warning"))
        sys.stdout, sys.stderr = out, err
        warnings.showwarning = self._warning
        logs.record_sink = self.handle_record
        try:
            yield
        finally:
            out.flush()
            err.flush()
            sys.stdout, sys.stderr, warnings.showwarning, logs.record_sink = saved
            descriptors.sinks.remove(self._descriptor_line)

    def _descriptor_line(self, stream: str, text: str) -> None:
        """A line written to fd 1 or 2 (:func:`runner.observe.descriptors.captured`)."""
        self.event(stream, text, "info" if stream == "stdout" else "warning")
