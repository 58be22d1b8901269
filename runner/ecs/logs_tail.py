"""Following one CloudWatch log stream: the container's events, in order, each once.

:meth:`LogTail.fetch` returns the events that arrived since the last call. A stream that does
not exist yet (the container has not started, or ``awslogs`` has not shipped its first line)
is simply empty. Rendering is separate and pure: raw lines when stdout is not a terminal (the
runner's JSON, for ``jq`` or a CI log), a readable form on a terminal.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from runner.observe.console import progress_line


class LogTail:
    def __init__(self, client: Any, group: str, stream: str) -> None:
        self._client = client
        self._group = group
        self._stream = stream
        self._token: str | None = None

    def fetch(self) -> list[dict[str, Any]]:
        """Every event not returned before, oldest first. Safe to call at any time, any
        number of times; a missing stream or group is no events (yet)."""
        events: list[dict[str, Any]] = []
        while True:
            args: dict[str, Any] = {
                "logGroupName": self._group,
                "logStreamName": self._stream,
                "startFromHead": True,
            }
            if self._token is not None:
                args["nextToken"] = self._token
            try:
                page = self._client.get_log_events(**args)
            except self._client.exceptions.ResourceNotFoundException:
                return events
            events.extend(page.get("events", []))
            token = page.get("nextForwardToken")
            # the end of the stream: CloudWatch hands back the token it was given
            if token is None or token == self._token:
                return events
            self._token = token


def runner_summary(message: str) -> dict[str, Any] | None:
    """The runner's ``summary`` event, if ``message`` is one (it is always the runner's last)."""
    event = _json_object(message)
    return event if event is not None and event.get("event") == "summary" else None


def render(message: str, tty: bool) -> str:
    """A log event's message for stdout: as it is, or on a terminal a JSON event as
    ``HH:MM:SS level event key=value ...``."""
    event = _json_object(message) if tty else None
    if event is None:
        return message.rstrip("\n")
    stamp = str(event.pop("timestamp", ""))
    try:
        stamp = datetime.datetime.fromisoformat(stamp).strftime("%H:%M:%S")
    except ValueError:
        pass
    head = " ".join(
        str(part) for part in (stamp, event.pop("level", ""), event.pop("event", "")) if part
    )
    if head.endswith("revision.progress"):
        return f"{head} {progress_line(event)}"
    rest = " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}"
        for key, value in event.items()
    )
    return f"{head} {rest}".rstrip()


def _json_object(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
