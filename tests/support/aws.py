"""AWS test fixtures: moto in server mode (a real HTTP endpoint on 127.0.0.1, a free port,
started once per test worker and stopped), fake credentials, and an ECS world to run tasks in.
No test talks to the real AWS: every fixture sets fake credentials, the region, and either
``AWS_ENDPOINT_URL`` (the moto server) or moto's in-process ``mock_aws``.

Import the fixtures into a test module: ``from tests.support.aws import aws_server, ...  # noqa: F401``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.pgcluster import free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER = "migrations"
LOG_GROUP = "/ecs/migrations"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclasses.dataclass(frozen=True)
class MotoServer:
    url: str

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        request = urllib.request.Request(
            self.url + path, method="POST", data=json.dumps(body or {}).encode()
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def reset(self) -> None:
        self._post("/moto-api/reset")

    def natural_lifecycle(self) -> None:
        """moto's own: each DescribeTasks moves a task one state on, STOPPED (exit 0) at the 4th."""
        self._post("/moto-api/state-manager/unset-transition", {"model_name": "ecs::task"})

    def hold_tasks_running(self) -> None:
        """Tasks stay RUNNING until stopped (StopTask, or a test's :func:`stop_in_backend`)."""
        self._post(
            "/moto-api/state-manager/set-transition",
            {
                "model_name": "ecs::task",
                "transition": {"progression": "manual", "times": 1_000_000},
            },
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **FAKE_ENV},
    )
    server = MotoServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(server.url + "/moto-api/data.json", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def aws_server(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto server, and this process's boto3 pointed at it (AWS_ENDPOINT_URL)."""
    fake_credentials(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    moto_server.reset()
    moto_server.natural_lifecycle()
    return moto_server


@pytest.fixture
def aws_in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process mock (it can set exit codes and stopCode, which the server cannot);
    tasks stay RUNNING until a test stops them."""
    from moto import mock_aws
    from moto.moto_api import state_manager

    fake_credentials(monkeypatch)
    with mock_aws():
        state_manager.set_transition(
            model_name="ecs::task", transition={"progression": "manual", "times": 1_000_000}
        )
        yield
    state_manager.unset_transition("ecs::task")


def stop_in_backend(
    task_arn: str,
    *,
    exit_code: int | None,
    stop_code: str,
    stopped_reason: str,
    container_reason: str | None = None,
) -> None:
    """End a task as ECS would, in the in-process mock: what the server cannot model."""
    from moto.ecs.models import ecs_backends

    task = ecs_backends[ACCOUNT][REGION].tasks[CLUSTER][task_arn]
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stop_code = stop_code
    task.stopped_reason = stopped_reason
    container = task.containers[0]
    if exit_code is None:
        del container.exitCode
    else:
        container.exitCode = exit_code
    if container_reason is not None:
        container.reason = container_reason


@dataclasses.dataclass(frozen=True)
class World:
    """A cluster, a VPC subnet and security group, and the log group, in one region."""

    ecs: Any
    logs: Any
    subnet: str
    security_group: str

    def register(
        self,
        family: str = "migrate",
        *,
        image: str = "registry/migrator:1",
        extra_containers: tuple[dict[str, Any], ...] = (),
        tags: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """A Fargate task definition whose first container ``migrate`` logs with awslogs.
        (moto needs ``memory`` on a container, and models only the first one in tasks.)"""
        args: dict[str, Any] = dict(
            family=family,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/exec",
            containerDefinitions=[
                {
                    "name": "migrate",
                    "image": image,
                    "essential": True,
                    "memory": 512,
                    "command": ["upgrade"],
                    "environment": [{"name": "DB_HOST", "value": "db.internal"}],
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {
                            "awslogs-group": LOG_GROUP,
                            "awslogs-region": REGION,
                            "awslogs-stream-prefix": "migrate",
                        },
                    },
                },
                *extra_containers,
            ],
        )
        if tags:
            args["tags"] = tags
        return dict(self.ecs.register_task_definition(**args)["taskDefinition"])

    def stream_of(self, task_arn: str) -> str:
        return f"migrate/migrate/{task_arn.rsplit('/', 1)[-1]}"

    def write_logs(self, task_arn: str, *messages: str, create: bool = False) -> None:
        stream = self.stream_of(task_arn)
        if create:
            self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        self.logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": now, "message": message} for message in messages],
        )

    def the_task(self) -> dict[str, Any]:
        arns = self.ecs.list_tasks(cluster=CLUSTER)["taskArns"]
        assert len(arns) == 1, arns
        return dict(self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"][0])

    def args(self, *extra: str) -> list[str]:
        return [
            "run",
            "--cluster",
            CLUSTER,
            "--task-definition",
            "migrate",
            "--subnets",
            self.subnet,
            "--security-groups",
            self.security_group,
            "--poll-interval",
            "0.02",
            "--drain",
            "0.3",
            *extra,
        ]


def make_world(session: Any = None) -> World:
    """The world, made with ``session`` (a boto3 Session; default: boto3's own)."""
    import boto3

    session = session or boto3
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # moto answers 500 for awsvpc tasks in a VPC without DNS hostnames
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="migrate", Description="migrations", VpcId=vpc)[
        "GroupId"
    ]
    ecs = session.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    logs = session.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    return World(ecs=ecs, logs=logs, subnet=subnet, security_group=group)


def runner_line(event: str, **fields: Any) -> str:
    """A log line as the runner writes it."""
    return json.dumps(
        {"timestamp": "2026-11-30T12:00:00.000000Z", "level": "info", "event": event, **fields}
    )


Action = Callable[[], None]


def scripted_stop(*actions: Action) -> Any:
    """A launcher :class:`~runner.ecs.launcher.Stop` that runs the next of ``actions`` at
    each of the launcher's pauses: a scenario in the launcher's own time, not the clock's."""
    from runner.ecs.launcher import Stop

    class Scripted(Stop):
        def __init__(self) -> None:
            super().__init__()
            self.pending = list(actions)

        def wait(self, seconds: float) -> None:
            if self.pending:
                self.pending.pop(0)()
            super().wait(seconds)

    return Scripted()
