"""ECS container definitions for the runner, as plain data (the JSON ECS registers).

The credentials reach the container only through `secrets` (ECS reads Secrets Manager at task
start with the execution role); `environment` carries nothing secret.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

RUNNER_CONTAINER = "migrate"
RUNNER_UID = "10001"            # the image's non-root user
RDS_CA_BUNDLE = "/certs/global-bundle.pem"  # shipped in the image
LOG_STREAM_PREFIX = "migrate"   # streams: migrate/<container>/<task id>
#: the shortest stopTimeout that lets the runner end its own stop: a revision busy in Python
#: gets 5 s (runner.process.interrupt.STUCK_GRACE_S) before the last resort, then up to 3 s
#: (STOP_WAIT_S) for its backends to end, and 2 s more to write the summary; under it ECS's
#: SIGKILL comes first (exit 137, no summary, no Failures datapoint)
MIN_STOP_TIMEOUT_S = 10
MAX_STOP_TIMEOUT_S = 120  # Fargate's limit


STOP_TIMEOUT_RANGE = (f"{MIN_STOP_TIMEOUT_S} to {MAX_STOP_TIMEOUT_S} s (the runner's own stop "
                      f"needs up to {MIN_STOP_TIMEOUT_S} s; Fargate allows 120 at most)")


class ContainerError(ValueError):
    """Container definitions that ECS would refuse or that would leak a secret."""


@dataclass(frozen=True)
class RunnerContainer:
    image: str
    log_group: str
    region: str
    db_host: str
    db_name: str
    db_port: int = 5432
    db_secret_arn: str | None = None   # injected as DB_SECRET (RDS-managed or custom secret)
    db_user: str | None = None         # with IAM database authentication instead of a password
    ssl_mode: str = "verify-full"
    iam_auth: bool = False
    stop_timeout: int = 30
    command: tuple[str, ...] = ("upgrade",)
    extra_environment: dict[str, str] = field(default_factory=dict)  # e.g. the metric names
    name: str = RUNNER_CONTAINER


def awslogs(log_group: str, region: str, stream_prefix: str) -> dict[str, Any]:
    """awslogs in blocking mode: a full buffer pauses the writer instead of dropping the lines
    of a failing run (non-blocking is ECS's default since mid-2025)."""
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": log_group,
            "awslogs-region": region,
            "awslogs-stream-prefix": stream_prefix,
            "mode": "blocking",
        },
    }


_SECRET_NAMES = ("PASSWORD", "SECRET", "TOKEN", "DATABASE_URL")


def database_environment(host: str, port: int, name: str, ssl_mode: str) -> dict[str, str]:
    """Where the database is, as the runner and the service both read it (`DB_*`); with
    certificate verification, the RDS CA bundle at the path the runner's image carries it."""
    environment = {"DB_HOST": host, "DB_PORT": str(port), "DB_NAME": name,
                   "DB_SSLMODE": ssl_mode}
    if ssl_mode in ("verify-ca", "verify-full"):
        environment["DB_SSLROOTCERT"] = RDS_CA_BUNDLE
    return environment


def runner_container(spec: RunnerContainer) -> dict[str, Any]:
    """The runner's container definition: non-root, read-only root filesystem, `stopTimeout`,
    blocking awslogs, the credentials through `secrets` only.

    Raises `ContainerError` if an environment variable's name says it holds a secret (those
    belong in `secrets`), or if neither a secret nor IAM authentication gives credentials.
    """
    environment = {
        **database_environment(spec.db_host, spec.db_port, spec.db_name, spec.ssl_mode),
        "MIGRATION_LOG_FORMAT": "json",
        **spec.extra_environment,
    }
    if spec.iam_auth:
        if not spec.db_user:
            raise ContainerError("IAM database authentication needs the database user")
        environment["MIGRATION_IAM_AUTH"] = "true"
        environment["DB_USER"] = spec.db_user
    elif not spec.db_secret_arn:
        raise ContainerError("no credentials: give the secret's ARN, or turn on IAM auth")
    leaking = sorted(name for name in environment
                     if any(word in name.upper() for word in _SECRET_NAMES))
    if leaking:
        raise ContainerError(f"{', '.join(leaking)} must come from `secrets`, not `environment`")

    secrets = ([{"name": "DB_SECRET", "valueFrom": spec.db_secret_arn}]
               if spec.db_secret_arn else [])
    if not MIN_STOP_TIMEOUT_S <= spec.stop_timeout <= MAX_STOP_TIMEOUT_S:
        raise ContainerError(f"stopTimeout {spec.stop_timeout}: {STOP_TIMEOUT_RANGE}")
    return {
        "name": spec.name,
        "image": spec.image,
        "essential": True,
        "command": list(spec.command),
        "user": RUNNER_UID,
        "readonlyRootFilesystem": True,
        "stopTimeout": spec.stop_timeout,
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "secrets": secrets,
        "logConfiguration": awslogs(spec.log_group, spec.region, LOG_STREAM_PREFIX),
    }


def with_init_container(app_containers: list[dict[str, Any]],
                        runner: dict[str, Any]) -> list[dict[str, Any]]:
    """The app's container definitions with the runner added as an init container.

    The runner becomes `essential: false` (ECS refuses a SUCCESS dependency on an essential
    container) and every app container `dependsOn` it with condition `SUCCESS`, so the app
    starts only after the migration exited 0 (Fargate platform 1.3.0 or later). Existing
    `dependsOn` entries are kept. The inputs are not modified. Raises `ContainerError` if an app
    container already has the runner's name.
    """
    name = runner["name"]
    if any(container["name"] == name for container in app_containers):
        raise ContainerError(f"an app container is already named {name!r}")
    init = {**copy.deepcopy(runner), "essential": False}
    apps = []
    for container in copy.deepcopy(app_containers):
        depends = [d for d in container.get("dependsOn", []) if d["containerName"] != name]
        container["dependsOn"] = [*depends, {"containerName": name, "condition": "SUCCESS"}]
        apps.append(container)
    return [init, *apps]


# Probes with the app image's own Python (no curl needed): urlopen raises on a non-2xx answer.
_PROBE = ("import sys, urllib.request; "
          "sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=4)"
          ".status == 200 else 1)")


def app_container(name: str, image: str, port: int, log_group: str, region: str, *,
                  environment: dict[str, str], db_secret_arn: str,
                  health_path: str = "/healthz") -> dict[str, Any]:
    """The web app's container (the example FastAPI service): the database's `DB_*` in
    `environment`, its credentials as `DB_SECRET` through `secrets`, and a container health
    check on `health_path` (the service answers 200 there only with the database reachable
    and at, or ahead of, its migrations' head). Raises `ContainerError` for a secret-looking
    name in `environment`."""
    leaking = sorted(key for key in environment
                     if any(word in key.upper() for word in _SECRET_NAMES))
    if leaking:
        raise ContainerError(f"{', '.join(leaking)} must come from `secrets`, not `environment`")
    return {
        "name": name,
        "image": image,
        "essential": True,
        "portMappings": [{"containerPort": port, "protocol": "tcp"}],
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "secrets": [{"name": "DB_SECRET", "valueFrom": db_secret_arn}],
        "healthCheck": {
            "command": ["CMD", "python", "-c", _PROBE.format(port=port, path=health_path)],
            "interval": 15, "timeout": 5, "retries": 3, "startPeriod": 30},
        "logConfiguration": awslogs(log_group, region, name),
    }
