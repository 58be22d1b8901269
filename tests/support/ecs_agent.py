"""A small ECS agent for the rehearsal: moto (in server mode, in this process) keeps the tasks;
this agent runs their containers for real, with podman, as ECS would.

For each task RunTask starts, the agent reads the task definition and runs its containers:
image, command (and the task's overrides), environment, ``secrets`` resolved from Secrets
Manager (through the moto endpoint, as ECS does with the execution role), a read-only root
filesystem, the user, the stop timeout; ``dependsOn`` with ``SUCCESS`` runs a container only
after the one it names exited 0. Every line a container writes goes to CloudWatch Logs under
the ``awslogs`` stream name ECS uses (``<prefix>/<container>/<task id>``). StopTask only asks
(desired status STOPPED); the agent then stops the running container (``podman stop`` with the
stop timeout: SIGTERM, then SIGKILL) and reports the task STOPPED with the first container's
exit code (moto models only that one), as ECS does once the containers have exited.

:func:`ecs_like_moto` makes moto's backend behave as ECS does where it differs: a Fargate task
definition sizes its task, not its containers; StopTask leaves the stopping to the agent.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
import types
import uuid
from typing import Any

import pytest

RUN_AS_ECS = ["--network=host"]  # the test's PostgreSQL listens on the host's 127.0.0.1


def ecs_like_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch moto's ECS backend (in this process) where it differs from ECS, for the agent."""
    from moto.ecs.models import EC2ContainerServiceBackend

    sized = EC2ContainerServiceBackend._calculate_task_resource_requirements

    def task_sized(task_definition: Any) -> dict[str, Any]:
        defs = task_definition.container_definitions
        if task_definition.memory:  # Fargate sizes the task: no container needs a memory
            defs = [{"memory": 0, **d} for d in defs]
        return sized(types.SimpleNamespace(container_definitions=defs))

    def stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        tasks = self.tasks[self._get_cluster(cluster_str).name]
        task = next(t for arn, t in tasks.items() if arn.endswith(task_str.split("/")[-1]))
        if task.last_status != "STOPPED":
            task.desired_status = "STOPPED"
            task.stopped_reason = reason
            task.stop_code = "UserInitiated"
        return task

    monkeypatch.setattr(
        EC2ContainerServiceBackend,
        "_calculate_task_resource_requirements",
        staticmethod(task_sized),
    )
    monkeypatch.setattr(EC2ContainerServiceBackend, "stop_task", stop_task)


@dataclasses.dataclass
class Ran:
    """One container the agent ran: when, how it ended."""

    task_arn: str
    name: str
    argv: list[str]
    started: float
    exit_code: int | None = None
    stopped_by_agent: bool = False


class EcsAgent:
    """Runs the tasks of ``cluster`` in moto's ECS backend ``backend``; ``session`` is a boto3
    session pointed at the moto endpoint (Secrets Manager, CloudWatch Logs)."""

    def __init__(
        self, backend: Any, session: Any, cluster: str, podman_env: dict[str, str]
    ) -> None:
        self._backend = backend
        self._session = session
        self._cluster = cluster
        self._podman_env = podman_env
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: set[str] = set()
        self.ran: list[Ran] = []
        self.names: list[str] = []

    def __enter__(self) -> EcsAgent:
        watcher = threading.Thread(target=self._watch, name="ecs-agent", daemon=True)
        watcher.start()
        self._threads.append(watcher)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        for name in self.names:
            subprocess.run(
                ["podman", "rm", "--force", "--ignore", name],
                env=self._podman_env,
                capture_output=True,
            )
        for thread in self._threads:
            thread.join(timeout=60)

    def running_containers(self) -> list[str]:
        """The agent's containers podman still has."""
        out = subprocess.run(
            ["podman", "ps", "--format", "{{.Names}}"],
            env=self._podman_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return [name for name in out if name in self.names]

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            for arn, task in list(self._backend.tasks.get(self._cluster, {}).items()):
                if arn not in self._seen and task.desired_status == "RUNNING":
                    self._seen.add(arn)
                    thread = threading.Thread(target=self._run_task, args=(task,), daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def _run_task(self, task: Any) -> None:
        definition = self._backend.describe_task_definition(task.task_definition_arn)
        codes: dict[str, int] = {}
        for container in definition.container_definitions:
            if task.desired_status == "STOPPED" or not self._may_start(container, codes):
                continue
            ran = self._run_container(task, container)
            codes[container["name"]] = ran.exit_code if ran.exit_code is not None else -1
            if container.get("essential", True):
                break
        first = definition.container_definitions[0]["name"]
        self._report_stopped(task, codes.get(first))

    @staticmethod
    def _may_start(container: dict[str, Any], codes: dict[str, int]) -> bool:
        return all(
            codes.get(d["containerName"]) == 0
            for d in container.get("dependsOn", [])
            if d["condition"] == "SUCCESS"
        )

    def _report_stopped(self, task: Any, exit_code: int | None) -> None:
        container = task.containers[0]
        if exit_code is None:
            del container.exitCode  # it never ran
        else:
            container.exitCode = exit_code
        if task.desired_status != "STOPPED":
            task.stop_code = "EssentialContainerExited"
            task.stopped_reason = "Essential container in task exited"
        task.desired_status = "STOPPED"
        task.last_status = "STOPPED"

    def _argv_and_env(
        self, task: Any, container: dict[str, Any]
    ) -> tuple[list[str], dict[str, str], str]:
        override = next(
            (
                o
                for o in task.overrides.get("containerOverrides", [])
                if o.get("name") == container["name"]
            ),
            {},
        )
        environment = {
            e["name"]: e["value"]
            for e in [*container.get("environment", []), *override.get("environment", [])]
        }
        for secret in container.get("secrets", []):
            region = secret["valueFrom"].split(":")[3]
            environment[secret["name"]] = self._session.client(
                "secretsmanager", region_name=region
            ).get_secret_value(SecretId=secret["valueFrom"])["SecretString"]
        name = f"mr-agent-{uuid.uuid4().hex[:10]}"
        argv = [
            "podman",
            "run",
            "--rm",
            "--name",
            name,
            *RUN_AS_ECS,
            "--stop-timeout",
            str(container.get("stopTimeout", 30)),
        ]
        if container.get("readonlyRootFilesystem"):
            argv += ["--read-only", "--read-only-tmpfs=false"]
        if container.get("user"):
            argv += ["--user", container["user"]]
        argv += [item for key in environment for item in ("--env", key)]  # values: not in argv
        argv += [container["image"], *override.get("command", container.get("command") or [])]
        return argv, {**self._podman_env, **environment}, name

    def _run_container(self, task: Any, container: dict[str, Any]) -> Ran:
        argv, env, name = self._argv_and_env(task, container)
        self.names.append(name)
        ran = Ran(task.task_arn, container["name"], argv, time.monotonic())
        self.ran.append(ran)
        shipper = LogShipper(self._session, container, task.task_arn)
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        pump = threading.Thread(target=shipper.ship, args=(proc.stdout,), daemon=True)
        pump.start()
        while proc.poll() is None:
            if task.desired_status == "STOPPED" and not ran.stopped_by_agent:
                ran.stopped_by_agent = True
                subprocess.run(
                    ["podman", "stop", "--time", str(container.get("stopTimeout", 30)), name],
                    env=self._podman_env,
                    capture_output=True,
                )
            time.sleep(0.05)
        pump.join(timeout=30)
        ran.exit_code = proc.returncode
        return ran


class LogShipper:
    """A container's output to CloudWatch Logs, as the awslogs driver ships it."""

    def __init__(self, session: Any, container: dict[str, Any], task_arn: str) -> None:
        options = (container.get("logConfiguration") or {}).get("options", {})
        self._client = session.client("logs", region_name=options["awslogs-region"])
        self._group = options["awslogs-group"]
        self._stream = (
            f"{options['awslogs-stream-prefix']}/{container['name']}/{task_arn.rsplit('/', 1)[-1]}"
        )
        self.lines: list[str] = []

    def ship(self, output: Any) -> None:
        self._client.create_log_stream(logGroupName=self._group, logStreamName=self._stream)
        for line in output:
            self.lines.append(line.rstrip("\n"))
            self._client.put_log_events(
                logGroupName=self._group,
                logStreamName=self._stream,
                logEvents=[{"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}],
            )
