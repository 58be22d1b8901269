"""Who this runner is, for the DBA reading pg_stat_activity: ``application_name``."""

from __future__ import annotations

import json
import socket

from runner import __version__

MAX_APPLICATION_NAME = 63  # NAMEDATALEN - 1: PostgreSQL truncates beyond this


def application_name(where: str, version: str = __version__) -> str:
    """``migration-runner/VERSION WHERE``, cut to what PostgreSQL keeps, ASCII only."""
    text = f"migration-runner/{version} {where}".encode("ascii", "replace").decode()
    return text[:MAX_APPLICATION_NAME]


def task_id_from_metadata(task: dict[str, object]) -> str | None:
    """The ECS task id: the last segment of ``TaskARN`` in the task metadata document."""
    arn = task.get("TaskARN")
    return arn.rsplit("/", 1)[-1] if isinstance(arn, str) and arn else None


def where_am_i(metadata_uri: str | None, timeout_s: float = 0.5) -> str:
    """The ECS task id when running on ECS (metadata endpoint v4), else the host name."""
    if metadata_uri:
        import urllib.request  # only on ECS: keep the common start-up lean

        try:
            with urllib.request.urlopen(f"{metadata_uri}/task", timeout=timeout_s) as resp:  # noqa: S310
                task_id = task_id_from_metadata(json.load(resp))
            if task_id:
                return f"task/{task_id}"
        except (OSError, ValueError):
            pass  # no metadata: fall back to the host name, which ECS also sets
    return socket.gethostname()
