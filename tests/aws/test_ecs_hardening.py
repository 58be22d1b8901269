"""``ecs run`` under the faults of issue 21, promise 9: everything is validated before the
first AWS call, and a task the launcher started is never abandoned (DescribeTasks answering
MISSING right after RunTask, logs:GetLogEvents denied). Against moto in server mode, the
faults injected between the launcher and moto's real answers."""

from __future__ import annotations

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
