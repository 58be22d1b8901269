"""Pure decisions over task definitions (as DescribeTaskDefinition returns them): which
container runs the migration, a new revision with only its image replaced, and where its
``awslogs`` driver writes."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runner.ecs.errors import LaunchUsageError


@dataclass(frozen=True)
class LogLocation:
    group: str
    stream: str
    region: str | None


def label(task_definition: dict[str, Any]) -> str:
    """``family:revision``, as people name a task definition."""
    return f"{task_definition['family']}:{task_definition['revision']}"


def task_id(task_arn: str) -> str:
    """The task id: the last segment of the ARN (both the long and the old ARN format)."""
    return task_arn.rsplit("/", 1)[-1]


def container(task_definition: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The container definition that runs the migration: the one named, or the only one.

    Raises :class:`LaunchUsageError` when the name is unknown, or when there are several
    containers and no name (the launcher does not guess which one migrates)."""
    containers: list[dict[str, Any]] = task_definition["containerDefinitions"]
    names = [c["name"] for c in containers]
    if name is None:
        if len(containers) == 1:
            return containers[0]
        raise LaunchUsageError(
            f"task definition {label(task_definition)} has {len(containers)} containers "
            f"({', '.join(names)}): say which one migrates with --container "
            "(or MIGRATION_ECS_CONTAINER)"
        )
    for candidate in containers:
        if candidate["name"] == name:
            return candidate
    raise LaunchUsageError(
        f"task definition {label(task_definition)} has no container {name!r} "
        f"(it has {', '.join(names)}): fix --container / MIGRATION_ECS_CONTAINER"
    )


def with_image(
    task_definition: dict[str, Any],
    tags: list[dict[str, str]] | None,
    container_name: str,
    image: str,
    fields: Iterable[str],
) -> dict[str, Any]:
    """RegisterTaskDefinition arguments for a new revision of ``task_definition`` in which
    only ``container_name``'s image is ``image``: every one of ``fields`` (what
    RegisterTaskDefinition accepts: :func:`runner.ecs.runargs.registerable`) the described
    task definition has, and its tags but those reserved for AWS (``aws:...``). The input is
    not modified."""
    request = {
        key: copy.deepcopy(task_definition[key])
        for key in sorted(fields)
        if task_definition.get(key) not in (None, [], {})
    }
    for definition in request["containerDefinitions"]:
        if definition["name"] == container_name:
            definition["image"] = image
    kept = [tag for tag in tags or [] if not tag["key"].lower().startswith("aws:")]
    if kept:  # AWS's own (aws:...) are AWS's to set: RegisterTaskDefinition refuses them
        request["tags"] = copy.deepcopy(kept)
    return request


def log_location(
    container_definition: dict[str, Any], task_arn: str, writer: str | None = None
) -> LogLocation | None:
    """Where the ``awslogs`` driver writes this container's events for this task
    (``prefix/container/task-id``; ``prefix/writer/task-id`` for another ``writer`` of that
    group), or None when it does not use ``awslogs`` with a prefix (no stream name can be
    known then)."""
    config = container_definition.get("logConfiguration") or {}
    options = config.get("options") or {}
    prefix = options.get("awslogs-stream-prefix")
    if config.get("logDriver") != "awslogs" or not prefix or "awslogs-group" not in options:
        return None
    return LogLocation(
        group=options["awslogs-group"],
        stream=f"{prefix}/{writer or container_definition['name']}/{task_id(task_arn)}",
        region=options.get("awslogs-region"),
    )
