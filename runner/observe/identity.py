"""Who this runner is and where it runs: ``application_name`` for the DBA reading
pg_stat_activity, and the ledger's "ran on". On ECS both name the task, from the task
metadata (read once per process, see :mod:`runner.observe.ecs_metadata`); elsewhere the host name.
"""

from __future__ import annotations

import socket

from runner import __version__
from runner.observe.ecs_metadata import TIMEOUT_S, read_task

MAX_APPLICATION_NAME = 63  # NAMEDATALEN - 1: PostgreSQL truncates beyond this


def application_name(where: str, version: str = __version__) -> str:
    """``migration-runner/VERSION WHERE``, cut to what PostgreSQL keeps, ASCII only."""
    text = f"migration-runner/{version} {where}".encode("ascii", "replace").decode()
    return text[:MAX_APPLICATION_NAME]


def where_am_i(metadata_uri: str | None, timeout_s: float = TIMEOUT_S) -> str:
    """``task/<ECS task id>`` when running on ECS, else the host name (which ECS also sets)."""
    task, _problem = read_task(metadata_uri, timeout_s)
    return f"task/{task.task_id}" if task else socket.gethostname()


def ran_on(metadata_uri: str | None) -> str:
    """For the ledger: the task, its cluster, task definition and zone on ECS, else the host."""
    task, _problem = read_task(metadata_uri)
    return task.ran_on() if task else socket.gethostname()
