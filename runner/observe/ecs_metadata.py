"""The ECS task this runner runs in, from the task metadata endpoint v4
(``${ECS_CONTAINER_METADATA_URI_V4}/task``): cluster, task ARN, task definition
``family:revision`` and availability zone, for every log event and the ledger's "ran on".

Contract:
- :func:`read_task` makes one HTTP request per process (later calls return the first
  answer), bounded as a whole by ``timeout_s`` (a server that accepts and then dribbles
  cannot hold the run), and never raises: without the variable, or when the endpoint is
  slow, down or answers garbage, it returns no task and the reason, and the run goes on as
  it would off ECS.
- :func:`parse_task` is the decision, pure: a decoded document in, a :class:`Task` out (or
  ``None`` when the document names no task).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Log

TIMEOUT_S = 0.5
MAX_DOCUMENT_BYTES = 1 << 20  # a task document is a few kB; anything far larger is not one


@dataclasses.dataclass(frozen=True)
class Task:
    """What the runner says about its ECS task. Fields the endpoint did not give are ``None``."""

    task_arn: str
    cluster: str | None = None
    family_revision: str | None = None
    availability_zone: str | None = None

    @property
    def task_id(self) -> str:
        """The last segment of the task ARN (what the ECS console and log streams show)."""
        return self.task_arn.rsplit("/", 1)[-1]

    def log_fields(self) -> dict[str, str]:
        """Added to every log event."""
        fields = {
            "ecs_cluster": self.cluster,
            "ecs_task_arn": self.task_arn,
            "ecs_task_definition": self.family_revision,
            "ecs_az": self.availability_zone,
        }
        return {name: value for name, value in fields.items() if value}

    def ran_on(self) -> str:
        """For the ledger: ``task/<id> cluster/<name> <family:revision> <az>`` (what is known)."""
        cluster = self.cluster.rsplit("/", 1)[-1] if self.cluster else None
        parts = [
            f"task/{self.task_id}",
            f"cluster/{cluster}" if cluster else None,
            self.family_revision,
            self.availability_zone,
        ]
        return " ".join(part for part in parts if part)


def parse_task(document: Any) -> Task | None:
    """The task a metadata v4 ``/task`` document describes; ``None`` if it names none."""
    if not isinstance(document, dict):
        return None

    def text(key: str) -> str | None:
        value = document.get(key)
        return value.strip() if isinstance(value, str) and value.strip() else None

    arn = text("TaskARN")
    if arn is None:
        return None
    family, revision = text("Family"), text("Revision")
    return Task(
        task_arn=arn,
        cluster=text("Cluster"),
        family_revision=f"{family}:{revision}" if family and revision else family,
        availability_zone=text("AvailabilityZone"),
    )


@functools.cache
def read_task(
    metadata_uri: str | None, timeout_s: float = TIMEOUT_S
) -> tuple[Task | None, str | None]:
    """The task from the endpoint, or ``(None, why not)``; ``(None, None)`` off ECS."""
    if not metadata_uri:
        return None, None
    outcome: list[tuple[Task | None, str | None]] = []

    def fetch() -> None:
        outcome.append(_fetch(metadata_uri.rstrip("/") + "/task", timeout_s))

    # the socket timeout bounds each read, not the whole answer: a thread bounds the whole
    worker = threading.Thread(target=fetch, name="ecs-metadata", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        return None, f"no answer within {timeout_s:g} s"
    return outcome[0]


def _fetch(url: str, timeout_s: float) -> tuple[Task | None, str | None]:
    import http.client  # only on ECS: keep the common start-up lean
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]
    if len(body) > MAX_DOCUMENT_BYTES:
        return None, "the answer is too large to be a task document"
    try:
        task = parse_task(json.loads(body))
    except ValueError:
        return None, "the answer is not JSON"
    return (task, None) if task else (None, "the answer names no task (no TaskARN)")


def log_fields(metadata_uri: str | None, log: Log) -> dict[str, str]:
    """The task's fields for every log event (:meth:`Task.log_fields`), from the task
    metadata endpoint ``metadata_uri`` (``ECS_CONTAINER_METADATA_URI_V4``); off ECS none. An
    endpoint that fails costs one ``ecs.metadata_unavailable`` warning on ``log``, nothing
    more."""
    task, problem = read_task(metadata_uri)
    if problem:
        log.warning("ecs.metadata_unavailable", reason=problem)
    return task.log_fields() if task else {}
