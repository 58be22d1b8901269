"""Log set-up: one structlog pipeline, JSON lines (or, on a terminal, the short coloured
lines of :mod:`runner.observe.console`) on the stream the CLI gives: stdout for writing verbs,
stderr for verbs that print a result.

The pipeline is a list of small steps (:func:`pipeline`: one line each): level, ISO-8601
UTC timestamp, exception handling, redaction, headline first, renderer.
Alembic's own records (stdlib ``logging``) are bridged into the same pipeline. The runner's
logger writes straight to stdout, not through stdlib logging, so an env.py that calls
``logging.config.fileConfig`` cannot silence it. Configure once at start-up with
:func:`configure`; calling it again replaces the configuration (used once the settings,
and so the secrets to redact, are known).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO, cast

import structlog

from runner.observe import cloudwatch_sink
from runner.observe.redact import clip, learnt, redact_text, spellings

#: what every function that logs receives: a bound structlog logger
Log = structlog.typing.FilteringBoundLogger

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: no string in an event is longer (a driver's message can run on; a traceback, shown at
#: debug level, is exempt): cut after redaction, never before (see :func:`runner.observe.redact.clip`)
MAX_STRING = 1000


#: the secrets the last :func:`configure` was given, every spelling, longest first
_configured: list[str] = []


def secrets() -> list[str]:
    """Every spelling of every secret the log masks now (learnt ones too), longest first."""
    return [*learnt(), *_configured]


def redactor(secrets: Iterable[str]) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    """A structlog processor that redacts, then clips, every string in the event, however
    nested."""
    known = sorted(
        {s for secret in secrets if secret for s in spellings(secret)}, key=len, reverse=True
    )

    def scrub(value: Any, secrets: list[str], limit: int | None = MAX_STRING) -> Any:
        if isinstance(value, str):
            return clip(value, limit, secrets) if limit else redact_text(value, secrets)
        if isinstance(value, Mapping):
            return {k: scrub(v, secrets) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(v, secrets) for v in value]
        return value

    def process(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        secrets = [*learnt(), *known]  # learnt: made since (IAM tokens); once per event
        return {
            key: scrub(value, secrets, None if key == "exception" else MAX_STRING)
            for key, value in event.items()
        }

    return process


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` means a readable console on a terminal, JSON lines everywhere else."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def pipeline(
    fmt: str,
    level: str,
    secrets: Iterable[str],
    out: TextIO,
    context: Mapping[str, str] | None = None,
) -> list[Any]:
    """The processors, in order; the last renders the line. ``context``: fields every event
    carries (the ECS task), unless the event gives them itself."""
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        lambda _logger, _name, event: {**(context or {}), **event},
        structlog.processors.format_exc_info if level == "debug" else _drop_exc_info,
        redactor(secrets),
        _headline_first,
        _renderer(fmt, level, out),
    ]


def _renderer(fmt: str, level: str, out: TextIO) -> Any:
    if resolve_format(fmt, out) == "console":
        from runner.observe.console import Console, use_colors

        return Console(colors=use_colors(out), verbose=level == "debug", live=out.isatty())
    return structlog.processors.JSONRenderer(default=str)


#: the log's writes that failed, first first: ``(stream, exception)``; what the run's error
#: says of the output it lost (:func:`runner.process.interrupt.output_closed`)
failures: list[tuple[str, BaseException]] = []


class Guarded:
    """The log's stream, which a closed stream, a reader that went away (``| head -1``) or
    a full device (``ENOSPC``) must not turn into an exception in whatever code logged (a
    revision, the lock's release): a write that fails is recorded in :data:`failures` and
    sends SIGPIPE to the process — which stops the run as a signal does (exit 141), see
    :mod:`runner.process.interrupt` — and the rest of the run's events, its error and
    summary included, go to ``fallback`` (stderr for stdout; none for stderr) instead.
    Thread-safe enough for its one writer (structlog's WriteLogger holds a lock around
    write and flush)."""

    def __init__(self, stream: TextIO, fallback: TextIO | None, name: str = "stdout") -> None:
        self.stream, self.fallback, self.lost, self.name = stream, fallback, False, name

    def write(self, text: str) -> int:
        return self._do(lambda out: out.write(text)) or len(text)

    def flush(self) -> None:
        self._do(lambda out: out.flush())

    def isatty(self) -> bool:
        return not self.lost and self.stream.isatty()

    def _do(self, action: Callable[[TextIO], Any]) -> Any:
        if not self.lost:
            try:
                return action(self.stream)
            except (OSError, ValueError) as exc:  # EPIPE, ENOSPC, EBADF, a closed file
                self.lost = True
                failures.append((self.name, exc))
                with contextlib.suppress(OSError):
                    os.kill(os.getpid(), signal.SIGPIPE)
        if self.fallback is not None and self.fallback is not self.stream:
            with contextlib.suppress(OSError, ValueError):
                return action(self.fallback)
        return None


#: the log's stream as last configured (see :func:`moved`)
active: list[Guarded] = []


def move(saved: Mapping[int, int]) -> Callable[[], None]:
    """Point the log's stream (and its fallback) that write to fd 1 or 2 at ``saved``'s
    copies of those fds, while :mod:`runner.observe.descriptors` captures the fds
    themselves; returns what puts them back."""
    undo: list[tuple[Guarded, str, TextIO, TextIO]] = []
    for guard in active:
        for attr in ("stream", "fallback"):
            stream = getattr(guard, attr)
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # not a file (in-process), closed
                continue
            if fd in saved:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
                copy = open(
                    saved[fd], "w", encoding=stream.encoding, errors=stream.errors, closefd=False
                )
                setattr(guard, attr, copy)
                undo.append((guard, attr, stream, copy))

    def back() -> None:
        for guard, attr, stream, copy in undo:
            setattr(guard, attr, stream)
            with contextlib.suppress(OSError, ValueError):  # not closed: a thread that
                copy.flush()  # logged a moment ago may still write to it

    return back


def guarded(stream: TextIO) -> TextIO:
    """``stream``, guarded (see :class:`Guarded`) when it is stdout or stderr."""
    if stream is sys.stdout:
        out = Guarded(stream, sys.stderr)
    elif stream is sys.stderr:
        out = Guarded(stream, None, "stderr")
    else:
        active.clear()
        return stream
    active[:] = [out]
    return cast(TextIO, out)


def configure(
    fmt: str = "auto",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    context: Mapping[str, str] | None = None,
) -> None:
    """Install the pipeline for structlog and bridge stdlib logging (Alembic) into it."""
    out = guarded(stream or sys.stdout)
    _configured[:] = sorted(
        {s for secret in secrets if secret for s in spellings(secret)}, key=len, reverse=True
    )
    sink = cloudwatch_sink.from_environment(os.environ)  # MIGRATION_CLOUDWATCH_LOG_GROUP
    structlog.configure(
        processors=pipeline(fmt, level, secrets, out, context),
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(
            file=cast(TextIO, sink.tee(out)) if sink else out
        ),
        cache_logger_on_first_use=False,
    )
    install_stdlib_bridge(level)


def _headline_first(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """timestamp, level and event lead every line, so a person can scan them."""
    head: dict[str, Any] = {
        key: event.pop(key) for key in ("timestamp", "level", "event") if key in event
    }
    return {**head, **event}


def _drop_exc_info(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("exc_info", None)
    return event


#: while revisions run, the project's own records go here first (``True``: taken), to
#: become ``revision.output`` events (:mod:`runner.execution.output_capture`)
record_sink: Callable[[logging.LogRecord], bool] | None = None


class _Bridge(logging.Handler):
    """Forwards stdlib records (Alembic's "Running upgrade ..." lines) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record_sink is not None and record_sink(record):
                return
            log = structlog.get_logger(record.name)
            getattr(log, record.levelname.lower(), log.info)(
                record.getMessage(), logger=record.name
            )
        except Exception:  # a log line must never break a migration
            self.handleError(record)


_configured_level = ["info"]


def install_stdlib_bridge(level: str | None = None) -> None:
    """Make the bridge the only stdlib output, and re-enable the loggers we care about.

    Safe to call twice: an env.py that ran ``fileConfig`` replaced the root handlers (its
    plain-text console handler would otherwise print Alembic's lines a second time, to
    stderr) and disabled existing loggers, so the runner calls this again once env.py has
    configured its context. Default level: the one last given to :func:`configure`.
    """
    level = level or _configured_level[0]
    _configured_level[0] = level
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Bridge())
    root.setLevel(LEVELS[level] if level == "debug" else logging.WARNING)
    alembic_logger = logging.getLogger("alembic")
    for handler in list(alembic_logger.handlers):
        alembic_logger.removeHandler(handler)
    alembic_logger.propagate = True
    alembic_logger.disabled = False
    alembic_logger.setLevel(LEVELS[level])
    # plugin registration chatter says nothing about the migration
    logging.getLogger("alembic.runtime.plugins").setLevel(max(LEVELS[level], logging.WARNING))
    # the runner's revision.* events say what Alembic's "Running upgrade ..." lines say
    logging.getLogger("alembic.runtime.migration").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("alembic."):
            child = logging.getLogger(name)
            for handler in list(child.handlers):
                child.removeHandler(handler)
            child.propagate = True
            child.disabled = False


def close() -> None:
    """Flush the second output (the CloudWatch sink), if any, within its bound: at exit."""
    cloudwatch_sink.close_active()


def get(name: str = "runner") -> Any:
    """A logger bound to the configuration in effect now (not a lazy proxy, which would
    rebuild itself on every call): get a new one after :func:`configure`."""
    return structlog.get_logger(name).bind()
