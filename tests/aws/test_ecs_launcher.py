"""``migration-runner ecs run`` end to end: against moto in server mode (a real HTTP endpoint,
AWS_ENDPOINT_URL) and, for what the server cannot model (exit codes, stopCode), moto's
in-process mock. Scenarios advance at the launcher's own pauses (see ``scripted_stop``)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from typing import Any

import pytest

from runner.ecs import cli
from runner.ecs.errors import LaunchExit
from tests.support.aws import (
    CLUSTER,
    FAKE_ENV,
    make_world,
    runner_line,
    scripted_stop,
    stop_in_backend,
)
from tests.support.helpers import ROOT, wait_until

SUMMARY = runner_line("summary", command="upgrade", outcome="migrated", exit_code=0)


@pytest.fixture(autouse=True)
def _logs_outlive_capsys() -> Any:
    """``cli.main`` configures the log onto the test's captured stderr, closed after the test:
    later tests in this worker that log in-process (test_lock) would write to a closed file."""
    yield
    from runner.observe import logs

    logs.configure(stream=sys.__stderr__)


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def one(stderr: str, name: str) -> dict[str, Any]:
    found = [e for e in events(stderr) if e["event"] == name]
    assert len(found) == 1, (name, stderr)
    return found[0]


def test_success_streams_the_logs_in_order_and_exits_0(aws_server: Any, capsys: Any) -> None:
    world = make_world()
    world.register()
    lines = [
        runner_line("start", command="upgrade"),
        runner_line("revision.applied", revision="a1"),
        runner_line("revision.applied", revision="b2"),
        SUMMARY,
    ]

    def first_lines() -> None:
        world.write_logs(world.the_task()["taskArn"], *lines[:2], create=True)

    def the_rest() -> None:
        world.write_logs(world.the_task()["taskArn"], *lines[2:])

    code = cli.main(world.args(), environ={}, stop=scripted_stop(first_lines, the_rest))

    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines() == lines
    summary = one(err, "ecs.summary")
    task = world.the_task()
    assert summary["task_arn"] == task["taskArn"]
    assert summary["task_definition"] == "migrate:1"
    assert summary["exit_code"] == 0 and summary["container_exit_code"] == 0
    assert summary["runner_summary"] == json.loads(SUMMARY)
    assert summary["log_events"] == 4
    assert not [e for e in events(err) if e["level"] == "error"]
    assert events(err)[-1]["event"] == "ecs.summary"


def test_a_stream_that_appears_late_and_logs_that_arrive_after_the_stop_are_shown(
    aws_server: Any, capsys: Any
) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    arn: list[str] = []

    def nothing_yet() -> None:
        arn.append(world.the_task()["taskArn"])

    def stream_appears() -> None:
        world.write_logs(arn[0], runner_line("start"), create=True)

    def container_exits() -> None:  # awslogs has not shipped its last lines yet
        world.ecs.stop_task(cluster=CLUSTER, task=arn[0], reason="Essential container exited")

    def late_lines() -> None:
        world.write_logs(arn[0], runner_line("revision.applied", revision="a1"), SUMMARY)

    code = cli.main(
        world.args("--drain", "30"),
        environ={},
        stop=scripted_stop(nothing_yet, nothing_yet, stream_appears, container_exits, late_lines),
    )

    out, err = capsys.readouterr()
    assert code == 0
    assert [json.loads(line)["event"] for line in out.splitlines()] == [
        "start",
        "revision.applied",
        "summary",
    ]
    assert one(err, "ecs.summary")["runner_summary"]["outcome"] == "migrated"


def test_timeout_stops_the_task_and_exits_44(aws_server: Any, capsys: Any) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()

    code = cli.main(world.args("--timeout", "0.2"), environ={})

    _, err = capsys.readouterr()
    assert code == LaunchExit.TIMEOUT == 44
    task = world.the_task()
    assert task["lastStatus"] == "STOPPED"
    assert "--timeout 0.2 s passed" in task["stoppedReason"]
    error = one(err, "error")
    assert error["error_code"] == "ecs_timeout" and error["exit_code"] == 44
    assert one(err, "ecs.summary")["stopped_by"] == "timeout"


def test_image_registers_a_revision_with_only_that_image_changed(
    aws_server: Any, capsys: Any
) -> None:
    world = make_world()
    sidecar = {"name": "sidecar", "image": "registry/sidecar:7", "essential": False, "memory": 128}
    before = world.register(extra_containers=(sidecar,), tags=[{"key": "team", "value": "calls"}])

    code = cli.main(
        world.args("--container", "migrate", "--image", "registry/migrator:2"), environ={}
    )

    _, err = capsys.readouterr()
    assert code == 0
    registered = one(err, "ecs.registered")
    assert registered["task_definition"] == "migrate:2"
    after = world.ecs.describe_task_definition(taskDefinition="migrate:2", include=["TAGS"])
    assert world.the_task()["taskDefinitionArn"] == after["taskDefinition"]["taskDefinitionArn"]
    expected = json.loads(json.dumps(before["containerDefinitions"]))
    expected[0]["image"] = "registry/migrator:2"
    assert after["taskDefinition"]["containerDefinitions"] == expected
    for key in ("cpu", "memory", "networkMode", "requiresCompatibilities", "executionRoleArn"):
        assert after["taskDefinition"][key] == before[key]
    assert after["tags"] == [{"key": "team", "value": "calls"}]
    assert one(err, "ecs.summary")["registered"] is True


def test_command_overrides_the_containers_command(aws_server: Any, capsys: Any) -> None:
    world = make_world()
    world.register()

    assert cli.main(world.args("--command", "downgrade", "-1"), environ={}) == 0

    capsys.readouterr()
    assert world.the_task()["overrides"]["containerOverrides"] == [
        {"name": "migrate", "command": ["downgrade", "-1"]}
    ]


def test_sigint_stops_the_task_and_exits_45(aws_server: Any, tmp_path: Any) -> None:
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    env = {
        **os.environ,
        **FAKE_ENV,
        "AWS_ENDPOINT_URL": aws_server.url,
        "MIGRATION_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "ecs", *world.args()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if '"ecs.started"' in line:
                break
        assert seen and '"ecs.started"' in seen[-1], seen
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == LaunchExit.INTERRUPTED == 45
    task = world.the_task()
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == "migration-runner ecs run received SIGINT"
    assert one(rest, "error")["error_code"] == "ecs_interrupted"
    assert one(rest, "ecs.summary")["stopped_by"] == "SIGINT"
    assert "Traceback" not in rest


def _stopping(world: Any, **how: Any) -> Any:
    return lambda: stop_in_backend(world.the_task()["taskArn"], **how)


def test_a_failed_migration_passes_its_exit_code_through(aws_in_process: None, capsys: Any) -> None:
    world = make_world()
    world.register()

    code = cli.main(
        world.args(),
        environ={},
        stop=scripted_stop(
            _stopping(
                world,
                exit_code=6,
                stop_code="EssentialContainerExited",
                stopped_reason="Essential container in task exited",
            )
        ),
    )

    _, err = capsys.readouterr()
    assert code == 6
    error = one(err, "error")
    assert error["error_code"] == "ecs_container_failed" and error["exit_code"] == 6
    assert one(err, "ecs.summary")["container_exit_code"] == 6


def test_a_task_that_failed_to_start_exits_43_with_ecs_reasons(
    aws_in_process: None, capsys: Any
) -> None:
    world = make_world()
    world.register()

    code = cli.main(
        world.args(),
        environ={},
        stop=scripted_stop(
            _stopping(
                world,
                exit_code=None,
                stop_code="TaskFailedToStart",
                stopped_reason="CannotPullContainerError: pull image manifest has been retried 5 times",
                container_reason="CannotPullContainerError: registry/migrator:1: not found",
            )
        ),
    )

    _, err = capsys.readouterr()
    assert code == LaunchExit.NOT_STARTED == 43
    error = one(err, "error")
    assert error["error_code"] == "ecs_not_started"
    assert error["stop_code"] == "TaskFailedToStart"
    assert error["container_reason"] == "CannotPullContainerError: registry/migrator:1: not found"
    assert "stopCode: TaskFailedToStart" in error["message"]
    assert "CannotPullContainerError: pull image manifest" in error["message"]
    assert one(err, "ecs.summary")["container_exit_code"] is None


def test_a_container_without_exit_code_exits_43(aws_in_process: None, capsys: Any) -> None:
    world = make_world()
    world.register()

    code = cli.main(
        world.args(),
        environ={},
        stop=scripted_stop(
            _stopping(
                world,
                exit_code=None,
                stop_code="EssentialContainerExited",
                stopped_reason="Essential container in task exited",
            )
        ),
    )

    _, err = capsys.readouterr()
    assert code == 43
    assert one(err, "error")["stop_code"] == "EssentialContainerExited"


def test_an_unknown_cluster_is_an_aws_error_naming_it(aws_server: Any, capsys: Any) -> None:
    world = make_world()
    world.register()
    args = world.args()
    args[args.index(CLUSTER)] = "nope"

    code = cli.main(args, environ={})

    _, err = capsys.readouterr()
    assert code == LaunchExit.AWS_ERROR == 41
    message = one(err, "error")["message"]
    assert "RunTask failed" in message and "ClusterNotFoundException" in message
    assert "Traceback" not in err


def test_run_task_failures_exit_42_naming_the_reasons(aws_server: Any) -> None:
    import boto3
    from botocore.stub import Stubber

    from runner.ecs.errors import RunTaskFailed
    from runner.ecs.launcher import Launcher
    from runner.observe import logs

    world = make_world()
    definition = world.register()
    ecs = boto3.client("ecs")  # ECS's answer when Fargate has no capacity: a shape moto lacks
    with Stubber(ecs) as stub:
        stub.add_response("describe_task_definition", {"taskDefinition": definition})
        stub.add_response(
            "run_task",
            {
                "tasks": [],
                "failures": [
                    {
                        "arn": "arn:aws:ecs:us-east-1:123456789012:cluster/migrations",
                        "reason": "Capacity is unavailable at this time",
                    }
                ],
            },
        )
        launcher = Launcher(ecs, lambda _: world.logs, out=lambda _: None, log=logs.get())
        with pytest.raises(RunTaskFailed) as caught:
            launcher.run(cli.parse(world.args(), {})[0])

    assert caught.value.exit_code == LaunchExit.RUN_FAILED == 42
    assert caught.value.message == (
        "RunTask started no task: arn:aws:ecs:us-east-1:"
        "123456789012:cluster/migrations Capacity is unavailable "
        "at this time"
    )


@pytest.mark.parametrize("readers", ["kept", "gone"])
def test_a_killed_parent_shell_stops_the_task(aws_server: Any, readers: str) -> None:
    """The gate's command line as pulumi-command runs it (``/bin/sh -c``), whose shell a
    cancelled ``pulumi up`` ends with SIGKILL: the launcher outlives it and stops the task,
    even when whoever read its output is gone too (its stdout and stderr closed)."""
    aws_server.hold_tasks_running()
    world = make_world()
    world.register()
    env = {
        **os.environ,
        **FAKE_ENV,
        "AWS_ENDPOINT_URL": aws_server.url,
        "MIGRATION_LOG_FORMAT": "json",
    }
    launcher = shlex.join(
        [sys.executable, "-m", "runner", "ecs", *world.args(), "--stop-with-parent"]
    )
    shell = subprocess.Popen(
        ["/bin/sh", "-c", f"{launcher} & wait $!"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL if readers == "kept" else subprocess.PIPE,
        stderr=subprocess.DEVNULL if readers == "kept" else subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: world.ecs.list_tasks(cluster=CLUSTER)["taskArns"],
            timeout=60,
            what="the task to start",
        )
        if readers == "gone":
            assert shell.stdout is not None and shell.stderr is not None
            shell.stdout.close()
            shell.stderr.close()
        shell.kill()
        shell.wait()
        wait_until(
            lambda: world.the_task()["lastStatus"] == "STOPPED",
            timeout=30,
            what="the launcher to stop the task",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)  # the launcher, if it is still there
    assert world.the_task()["stoppedReason"] == (
        "migration-runner ecs run: the process that started it exited"
    )


def test_the_launcher_acts_as_the_role_the_deploy_assumes(aws_server: Any, capsys: Any) -> None:
    """MIGRATION_ECS_ROLE_ARN (the gate passes the stack's aws:assumeRole): the cluster lives
    in the role's account, which the machine's own credentials do not reach."""
    import boto3

    role_arn = "arn:aws:iam::111111111111:role/deployer"
    granted = boto3.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="setup")[
        "Credentials"
    ]
    world = make_world(
        boto3.session.Session(
            aws_access_key_id=granted["AccessKeyId"],
            aws_secret_access_key=granted["SecretAccessKey"],
            aws_session_token=granted["SessionToken"],
        )
    )
    world.register()

    assert cli.main(world.args(), environ={}) == LaunchExit.AWS_ERROR
    assert "DescribeTaskDefinition failed" in one(capsys.readouterr().err, "error")["message"]
    code = cli.main(world.args(), environ={"MIGRATION_ECS_ROLE_ARN": role_arn})
    assert code == 0, capsys.readouterr().err
    assert world.the_task()["taskArn"].startswith("arn:aws:ecs:us-east-1:111111111111:task/")


def _base_args(world: Any, *extra: str) -> list[str]:
    return [
        "run",
        "--cluster",
        CLUSTER,
        "--task-definition",
        "migrate",
        "--poll-interval",
        "0.02",
        "--drain",
        "0.3",
        *extra,
    ]


def test_the_network_of_an_existing_service_and_capacity_providers_are_used(
    aws_server: Any, capsys: Any
) -> None:
    """(moto keeps no capacity provider strategy on a service: the pure tests cover taking
    the service's; here the strategy is given.)"""
    import boto3

    world = make_world()
    world.register()
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_subnets(SubnetIds=[world.subnet])["Subnets"][0]["VpcId"]
    app_subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    world.ecs.create_service(
        cluster=CLUSTER,
        serviceName="orders",
        taskDefinition="migrate",
        desiredCount=0,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [app_subnet],
                "securityGroups": [world.security_group],
            }
        },
    )

    code = cli.main(
        _base_args(
            world,
            "--network-from-service",
            "orders",
            "--capacity-provider-strategy",
            "FARGATE_SPOT",
        ),
        environ={},
    )

    assert code == 0, capsys.readouterr().err
    task = world.the_task()
    [attachment] = task["attachments"]
    assert {d["name"]: d["value"] for d in attachment["details"]}["subnetId"] == app_subnet
    assert task["capacityProviderName"] == "FARGATE_SPOT"


def test_environment_size_and_tags_reach_the_task(aws_server: Any, capsys: Any) -> None:
    world = make_world()
    world.register()

    code = cli.main(
        world.args(
            "--env",
            "MIGRATION_ALLOW_DATABASE_AHEAD=true",
            "--cpu",
            "512",
            "--memory",
            "1024",
            "--tag",
            "deploy=42",
        ),
        environ={},
    )

    assert code == 0, capsys.readouterr().err
    arn = world.the_task()["taskArn"]
    [task] = world.ecs.describe_tasks(cluster=CLUSTER, tasks=[arn], include=["TAGS"])["tasks"]
    assert task["overrides"]["containerOverrides"] == [
        {
            "name": "migrate",
            "environment": [{"name": "MIGRATION_ALLOW_DATABASE_AHEAD", "value": "true"}],
        }
    ]
    assert (task["overrides"]["cpu"], task["overrides"]["memory"]) == ("512", "1024")
    assert task["tags"] == [{"key": "deploy", "value": "42"}]


def test_a_bridge_task_definition_is_refused_on_fargate_before_anything_is_registered(
    aws_server: Any, capsys: Any
) -> None:
    world = make_world()
    world.ecs.register_task_definition(
        family="migrate",
        networkMode="bridge",
        requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "migrate", "image": "registry/migrator:1", "memory": 512}],
    )

    code = cli.main(world.args("--image", "registry/migrator:2"), environ={})

    error = one(capsys.readouterr().err, "error")
    assert code == LaunchExit.USAGE == 40
    assert "network mode bridge: Fargate runs only awsvpc" in error["message"]
    assert world.ecs.list_task_definitions(familyPrefix="migrate")["taskDefinitionArns"] == [
        world.ecs.describe_task_definition(taskDefinition="migrate")["taskDefinition"][
            "taskDefinitionArn"
        ]
    ]
    assert world.ecs.list_tasks(cluster=CLUSTER)["taskArns"] == []


def test_the_roles_credentials_are_renewed_before_they_expire(aws_server: Any) -> None:
    """AssumeRole grants an hour by default; a migration may run longer. Before, the
    launcher assumed the role once and its DescribeTasks failed with ExpiredToken after an
    hour, leaving the task unwatched. Here credentials granted for 15 minutes (AssumeRole's
    least) are due for renewal at once: each use takes new ones from STS."""
    import boto3
    from botocore.config import Config

    role = {
        "RoleArn": "arn:aws:iam::111111111111:role/deployer",
        "RoleSessionName": "migration-runner-ecs",
        "DurationSeconds": 900,
    }
    session = cli.acting_as(boto3.session.Session(), role, Config())
    first = session.get_credentials().get_frozen_credentials().access_key
    second = session.get_credentials().get_frozen_credentials().access_key
    assert first != second
    assert session.client("sts").get_caller_identity()["Account"] == "111111111111"
