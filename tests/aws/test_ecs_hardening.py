"""``ecs run`` under the faults of issue 21, promise 9: everything is validated before the
first AWS call, and a task the launcher started is never abandoned (DescribeTasks answering
MISSING right after RunTask, logs:GetLogEvents denied). Against moto in server mode, the
faults injected between the launcher and moto's real answers."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runner.ecs import cli
from runner.ecs.errors import LaunchExit, LaunchUsageError, TaskMissing
from runner.ecs.launcher import Launcher, Pacing
from runner.observe import logs
from tests.support.aws import make_world


@pytest.fixture(autouse=True)
def _logs_outlive_capsys() -> Any:
    yield
    logs.configure(stream=sys.__stderr__)


BASE = [
    "run",
    "--cluster",
    "c",
    "--task-definition",
    "td",
    "--subnets",
    "s-1",
    "--security-groups",
    "sg-1",
]


@pytest.mark.parametrize(
    ("extra", "environ", "says"),
    [
        (["--subnets", ",,"], {}, "--subnets"),
        (["--security-groups", " , "], {}, "--security-groups"),
        (["--image", ""], {}, "--image"),
        (["--timeout", "nan"], {}, "finite"),
        (["--timeout", "inf"], {}, "finite"),
        (["--timeout", "0"], {}, "more than 0"),
        ([], {"MIGRATION_ECS_COMMAND": "upgrade 'head"}, "MIGRATION_ECS_COMMAND"),
        (["--command", "check", "--cluster", "other"], {}, "put --command last"),
        (["--command", "check", "--timeout=5"], {}, "put --command last"),
    ],
)
def test_a_bad_value_is_refused_before_any_aws_call(extra, environ, says) -> None:
    with pytest.raises(LaunchUsageError) as caught:
        cli.parse([*BASE, *extra], environ)
    assert says in caught.value.message and caught.value.exit_code == LaunchExit.USAGE


class _MissingFirst:
    """The real (moto) ECS client, but DescribeTasks answers MISSING ``times`` times first."""

    def __init__(self, ecs: Any, times: int) -> None:
        self._ecs, self.left, self.stopped = ecs, times, []

    def describe_tasks(self, **kw: Any) -> dict[str, Any]:
        if self.left > 0:
            self.left -= 1
            return {"tasks": [], "failures": [{"arn": kw["tasks"][0], "reason": "MISSING"}]}
        return self._ecs.describe_tasks(**kw)

    def stop_task(self, **kw: Any) -> Any:
        self.stopped.append(kw["task"])
        return self._ecs.stop_task(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ecs, name)


def _launch(ecs: Any, logs_client: Any, world: Any, grace: float = 60.0) -> Any:
    launcher = Launcher(
        ecs,
        lambda _region: logs_client,
        out=lambda _e: None,
        log=logs.get(),
        pacing=Pacing(first_poll_s=0.01, max_poll_s=0.02, drain_s=0.1, missing_grace_s=grace),
    )
    return launcher.run(cli.parse(world.args(), {})[0])


def test_a_task_describetasks_does_not_know_yet_is_followed_to_its_end(aws_server: Any) -> None:
    world = make_world()
    world.register()
    ecs = _MissingFirst(world.ecs, times=3)
    result = _launch(ecs, world.logs, world)
    assert result.exit_code == 0 and ecs.left == 0 and ecs.stopped == []


def test_a_task_describetasks_never_finds_is_stopped_not_abandoned(aws_server: Any) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    ecs = _MissingFirst(world.ecs, times=10**6)
    with pytest.raises(TaskMissing) as caught:
        _launch(ecs, world.logs, world, grace=0.2)
    task = world.the_task()
    assert ecs.stopped == [task["taskArn"]] and task["lastStatus"] == "STOPPED"
    assert "StopTask was sent" in caught.value.message
    assert caught.value.exit_code == LaunchExit.NOT_STARTED


class _DeniedLogs:
    """The real (moto) Logs client whose GetLogEvents is denied, as by an IAM policy."""

    def __init__(self, client: Any) -> None:
        self.exceptions = client.exceptions

    def get_log_events(self, **_kw: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
            "GetLogEvents",
        )


def test_denied_logs_follow_the_task_without_them(aws_server: Any, capsys: Any) -> None:
    world = make_world()
    world.register()
    result = _launch(world.ecs, _DeniedLogs(world.logs), world)
    assert result.exit_code == 0 and result.outcome.container_exit_code == 0
    captured = capsys.readouterr()
    assert "ecs.logs_unavailable" in captured.out + captured.err


def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate"}}, operation)


class _Faulty:
    """The real (moto) ECS client, but ``method`` raises each of ``errors`` in turn first
    (None: the real answer); every StopTask is recorded."""

    def __init__(self, ecs: Any, method: str, *errors: Exception | None) -> None:
        self._ecs, self._method, self._errors, self.stops = ecs, method, list(errors), 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._ecs, name)

        def call(**kw: Any) -> Any:
            self.stops += name == "stop_task"
            if name == self._method and self._errors:
                error = self._errors.pop(0)
                if error is not None:
                    raise error
            return real(**kw)

        return call


def test_describetasks_throttled_a_few_times_is_followed_to_its_end(aws_server: Any) -> None:
    """Throttling past botocore's retries, twice in a row: asked again at the next poll;
    the run ends as the task does (moto's lifecycle: exit 0), nothing stopped."""
    world = make_world()
    world.register()
    ecs = _Faulty(world.ecs, "describe_tasks", None, *[_throttled("DescribeTasks")] * 2)
    result = _launch(ecs, world.logs, world)
    assert (result.exit_code, result.stopped_by, ecs.stops) == (0, None, 0)


def test_stoptask_throttled_on_timeout_is_tried_again_and_the_task_stopped(aws_server: Any) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    ecs = _Faulty(world.ecs, "stop_task", *[_throttled("StopTask")] * 2)
    launcher = Launcher(
        ecs, lambda _r: world.logs, out=lambda _e: None, log=logs.get(), pacing=Pacing(0.01, 0.02)
    )
    result = launcher.run(cli.parse(world.args("--timeout", "0.2"), {})[0])
    assert (result.exit_code, ecs.stops) == (LaunchExit.TIMEOUT, 3)
    assert world.the_task()["lastStatus"] == "STOPPED"


def test_stoptask_denied_on_timeout_says_the_task_runs_and_how_to_stop_it(
    aws_server: Any, capsys: Any, monkeypatch: Any
) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "StopTask")
    real = cli._launcher

    def launcher(*args: Any, **kw: Any) -> Any:
        made = real(*args, **kw)
        made._ecs = _Faulty(made._ecs, "stop_task", *[denied] * 10)
        return made

    monkeypatch.setattr(cli, "_launcher", launcher)
    code = cli.main(world.args("--timeout", "0.2"), environ={}, stop=cli.Stop())
    error = [e for e in _lines(capsys.readouterr().err) if e["event"] == "error"][0]
    task = world.the_task()
    assert code == LaunchExit.AWS_ERROR and task["lastStatus"] == "RUNNING"
    assert error["stopped"] is False and error["task_arn"] == task["taskArn"]
    assert f"aws ecs stop-task --cluster migrations --task {task['taskArn']}" in error["message"]
    assert "may still be running" in error["message"]


class _NeverRuns:
    """The real (moto) ECS client, but the task stays PROVISIONING (an image pull that
    never ends) and its container never gets an exit code (moto's says 0)."""

    def __init__(self, ecs: Any) -> None:
        self._ecs = ecs

    def describe_tasks(self, **kw: Any) -> dict[str, Any]:
        answer = self._ecs.describe_tasks(**kw)
        for task in answer["tasks"]:
            if task["lastStatus"] != "STOPPED":
                task["lastStatus"] = "PROVISIONING"
            for container in task.get("containers", []):
                container.pop("exitCode", None)
        return dict(answer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ecs, name)


def test_a_timeout_before_the_task_ever_ran_is_43_not_44(aws_server: Any) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    launcher = Launcher(
        _NeverRuns(world.ecs),
        lambda _r: world.logs,
        out=lambda _e: None,
        log=logs.get(),
        pacing=Pacing(0.01, 0.02, drain_s=0.1),
    )
    result = launcher.run(cli.parse(world.args("--timeout", "0.2"), {})[0])
    assert (result.exit_code, result.stopped_by) == (LaunchExit.NOT_STARTED, "timeout")
    assert world.the_task()["lastStatus"] == "STOPPED"


def _lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
