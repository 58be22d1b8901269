"""An optional second output of the log pipeline: the same lines, sent to a CloudWatch Logs
group and stream, for runs outside ECS (a pipeline step migrating the database directly).

Enabled by ``MIGRATION_CLOUDWATCH_LOG_GROUP`` (and ``MIGRATION_CLOUDWATCH_LOG_STREAM``), read by
:func:`from_environment` independently of the runner's settings; needs boto3 (the ``aws``
extra), imported only then. Contract:

- :meth:`CloudWatchSink.write` never blocks and never raises: lines are queued and a
  background thread sends them in batches within PutLogEvents' limits, creating the group and
  stream if they are missing, retrying a failed batch with backoff;
- :meth:`CloudWatchSink.close` (at exit, which SIGTERM reaches through the runner's own
  handling) sends what is left within ``flush_timeout_s`` and returns; whatever was not
  delivered is reported once, as one ``cloudwatch.undelivered`` warning line on stderr;
- a CloudWatch outage therefore never fails the migration, and never slows it beyond that
  bounded flush.

Not watchtower: it creates the log group synchronously when constructed (an outage at start-up
raises or stalls), retries a batch five times back to back, warns once per failed batch and
waits up to 30 s per stream at close; the contract above needs the opposite on each point.
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

# PutLogEvents limits (CloudWatch Logs API reference): per batch 10,000 events and 1,048,576
# bytes counting 26 bytes per event; one event's message at most 256 KiB less those 26.
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_MESSAGE_BYTES = 256 * 1024 - EVENT_OVERHEAD
_END = object()


@dataclass(frozen=True)
class Event:
    timestamp_ms: int
    message: str


def truncate(message: str) -> str:
    """The message cut to what one event may carry (UTF-8 bytes), whole characters only."""
    encoded = message.encode()
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    return encoded[:MAX_MESSAGE_BYTES].decode(errors="ignore")


def batches(events: list[Event]) -> Iterator[list[dict[str, Any]]]:
    """``events`` (in the order written) as PutLogEvents batches, in order, each within the
    count and byte limits. Pure."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        message = truncate(event.message)
        cost = len(message.encode()) + EVENT_OVERHEAD
        if batch and (len(batch) == MAX_BATCH_EVENTS or size + cost > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append({"timestamp": event.timestamp_ms, "message": message})
        size += cost
    if batch:
        yield batch


class CloudWatchSink:
    def __init__(
        self,
        client: Any,
        group: str,
        stream: str,
        *,
        flush_timeout_s: float = 5.0,
        send_interval_s: float = 1.0,
        attempts: int = 3,
        report_to: TextIO | None = None,
    ) -> None:
        self.group = group
        self.stream = stream
        self._client = client
        self._flush_timeout_s = flush_timeout_s
        self._send_interval_s = send_interval_s
        self._attempts = attempts
        self._report_to = report_to
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # (time.time(), text)
        self._written = 0  # lines taken from the queue by the sending thread
        self._delivered = 0
        self._error: str | None = None
        self._ready = False
        self._deadline: float | None = None  # set by close(): stop retrying after it
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name="cloudwatch-sink", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        """Queue each non-empty line of ``text`` as one event. Never blocks or raises."""
        if not self._closed:
            self._queue.put((time.time(), text))

    def tee(self, stream: TextIO) -> _Tee:
        """A file-like object writing to ``stream`` and to this sink."""
        return _Tee(stream, self)

    def close(self) -> int:
        """Send what is queued within ``flush_timeout_s``, then stop; report any loss once.
        Returns the number of lines not delivered. Safe to call twice (the second does
        nothing and returns 0)."""
        if self._closed:
            return 0
        self._closed = True
        self._deadline = time.monotonic() + self._flush_timeout_s
        self._queue.put(_END)
        self._thread.join(self._flush_timeout_s)
        unsent = 0  # what the thread did not get to before the flush ran out
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _END:
                unsent += len(_lines(item[1]))
        lost = self._written + unsent - self._delivered
        if lost:
            self._report(lost)
        return lost

    def _report(self, lost: int) -> None:
        out = self._report_to or sys.stderr
        line = json.dumps(
            {
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
                "level": "warning",
                "event": "cloudwatch.undelivered",
                "log_group": self.group,
                "log_stream": self.stream,
                "written": self._delivered + lost,
                "undelivered": lost,
                "error": self._error or f"not sent within the {self._flush_timeout_s:g} s flush",
            }
        )
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError):  # a closed stderr: nothing left to tell
            pass

    def _send_loop(self) -> None:
        done = False
        while not done:
            pending: list[Event] = []
            try:
                item = self._queue.get(timeout=self._send_interval_s)
                while True:
                    if item is _END:
                        done = True
                        break
                    stamp, text = item
                    for line in _lines(text):
                        self._written += 1
                        pending.append(Event(int(stamp * 1000), line))
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            for batch in batches(pending):
                self._send(batch)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        """Deliver one batch, or give up on it: after ``attempts`` failures, or once the
        flush deadline has passed."""
        delay = 0.2
        for attempt in range(1, self._attempts + 1):
            try:
                if not self._ready:
                    self._create_destination()
                self._client.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=batch
                )
                self._delivered += len(batch)
                return
            except Exception as err:
                self._error = f"{type(err).__name__}: {err}"
                if (
                    getattr(err, "response", {}).get("Error", {}).get("Code")
                    == "ResourceNotFoundException"
                ):
                    self._ready = False
            if attempt == self._attempts or (
                self._deadline is not None and time.monotonic() + delay > self._deadline
            ):
                return
            time.sleep(delay)
            delay *= 2

    def _create_destination(self) -> None:
        for call, args in (
            ("create_log_group", {"logGroupName": self.group}),
            ("create_log_stream", {"logGroupName": self.group, "logStreamName": self.stream}),
        ):
            try:
                getattr(self._client, call)(**args)
            except self._client.exceptions.ResourceAlreadyExistsException:
                pass
        self._ready = True


class _Tee:
    """What structlog's WriteLogger writes to: the stream, and the sink's queue.

    The runner's SIGTERM handler raises in this thread wherever it happens to be. Once the
    line has gone to the stream, the ``finally`` queues it with no Python call in between
    (the interpreter runs a signal handler only at calls and loops), so the stream and
    CloudWatch never disagree about a line."""

    def __init__(self, stream: TextIO, sink: CloudWatchSink) -> None:
        self._stream = stream
        self._put = sink._queue.put
        self._sink = sink

    def write(self, text: str) -> int:
        if self._sink._closed:
            return self._stream.write(text)
        item = (time.time(), text)
        try:
            return self._stream.write(text)
        finally:
            self._put(item)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


_active: dict[str, CloudWatchSink | None] = {}  # "sink": decided once per process


def from_environment(environ: Mapping[str, str]) -> CloudWatchSink | None:
    """The process's sink, created on first call when ``MIGRATION_CLOUDWATCH_LOG_GROUP`` is
    set (stream: ``MIGRATION_CLOUDWATCH_LOG_STREAM``, default ``migration-runner/<host>/<UTC
    start time>``); None otherwise, or when it cannot be set up (said once on stderr: the
    migration goes on without it)."""
    if "sink" not in _active:
        _active["sink"] = _start(environ)
    return _active["sink"]


def _start(environ: Mapping[str, str]) -> CloudWatchSink | None:
    group = environ.get("MIGRATION_CLOUDWATCH_LOG_GROUP")
    if not group:
        return None
    stream = environ.get("MIGRATION_CLOUDWATCH_LOG_STREAM") or (
        f"migration-runner/{socket.gethostname()}/"
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H-%M-%SZ}-{os.getpid()}"
    )
    try:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "logs",
            config=Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
        )
    except Exception as err:
        sys.stderr.write(
            json.dumps(
                {
                    "level": "warning",
                    "event": "cloudwatch.disabled",
                    "log_group": group,
                    "error": f"{type(err).__name__}: {err}",
                    "message": "MIGRATION_CLOUDWATCH_LOG_GROUP is set but the CloudWatch sink cannot "
                    "start (install migration-runner[aws]; set AWS_REGION)",
                }
            )
            + "\n"
        )
        return None
    return CloudWatchSink(client, group, stream)


def close_active() -> None:
    """Flush and close the process's sink, if any (at exit; bounded)."""
    sink = _active.get("sink")
    if sink is not None:
        sink.close()
