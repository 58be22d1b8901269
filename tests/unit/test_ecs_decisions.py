"""The launcher's pure decisions: container choice, the new revision, the log stream name,
the outcome of a stopped task, RunTask failures, rendering, and the command line."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from runner.ecs import taskdef
from runner.ecs.cli import parse
from runner.ecs.errors import LaunchExit, LaunchUsageError
from runner.ecs.logs_tail import render, runner_summary
from runner.ecs.outcome import run_failures, task_outcome

TASK_ARN = "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef0123456789abcdef"
DESCRIBED: dict[str, Any] = {
    "taskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/orders-migrate:7",
    "family": "orders-migrate",
    "revision": 7,
    "status": "ACTIVE",
    "networkMode": "awsvpc",
    "requiresCompatibilities": ["FARGATE"],
    "compatibilities": ["EC2", "FARGATE"],
    "cpu": "256",
    "memory": "512",
    "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
    "registeredAt": "2026-11-30T10:00:00Z",
    "registeredBy": "arn:aws:iam::123456789012:user/ci",
    "requiresAttributes": [{"name": "ecs.capability.execution-role-awslogs"}],
    "volumes": [],
    "placementConstraints": [],
    "containerDefinitions": [
        {
            "name": "migrate",
            "image": "repo/migrator:old",
            "essential": False,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": "/ecs/orders",
                    "awslogs-region": "eu-west-1",
                    "awslogs-stream-prefix": "db",
                },
            },
        },
        {
            "name": "app",
            "image": "repo/app:old",
            "essential": True,
            "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}],
        },
    ],
}


def test_the_named_container_is_chosen() -> None:
    assert taskdef.container(DESCRIBED, "app")["image"] == "repo/app:old"


def test_several_containers_and_no_name_is_a_usage_error_listing_them() -> None:
    with pytest.raises(LaunchUsageError, match=r"2 containers \(migrate, app\).*--container"):
        taskdef.container(DESCRIBED, None)


def test_an_unknown_container_is_a_usage_error() -> None:
    with pytest.raises(LaunchUsageError, match="no container 'migrator'"):
        taskdef.container(DESCRIBED, "migrator")


def test_the_only_container_needs_no_name() -> None:
    single = {**DESCRIBED, "containerDefinitions": DESCRIBED["containerDefinitions"][:1]}
    assert taskdef.container(single, None)["name"] == "migrate"


def test_new_revision_changes_only_that_containers_image() -> None:
    original = copy.deepcopy(DESCRIBED)

    request = taskdef.with_image(
        DESCRIBED, [{"key": "team", "value": "orders"}], "migrate", "repo/migrator:new"
    )

    assert DESCRIBED == original
    assert request == {
        "family": "orders-migrate",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
        "containerDefinitions": [
            {**DESCRIBED["containerDefinitions"][0], "image": "repo/migrator:new"},
            DESCRIBED["containerDefinitions"][1],
        ],
        "tags": [{"key": "team", "value": "orders"}],
    }


def test_log_stream_is_prefix_container_task_id() -> None:
    where = taskdef.log_location(DESCRIBED["containerDefinitions"][0], TASK_ARN)

    assert where == taskdef.LogLocation(
        group="/ecs/orders",
        stream="db/migrate/0123456789abcdef0123456789abcdef",
        region="eu-west-1",
    )


def test_no_awslogs_prefix_means_no_stream_to_follow() -> None:
    assert taskdef.log_location(DESCRIBED["containerDefinitions"][1], TASK_ARN) is None


def _task(**container: Any) -> dict[str, Any]:
    return {
        "taskArn": TASK_ARN,
        "lastStatus": "STOPPED",
        "stopCode": "EssentialContainerExited",
        "stoppedReason": "Essential container in task exited",
        "containers": [{"name": "app", "exitCode": 0}, {"name": "migrate", **container}],
    }


@pytest.mark.parametrize("code", [0, 6, 130, 137])
def test_the_containers_exit_code_is_the_outcome(code: int) -> None:
    outcome = task_outcome(_task(exitCode=code), "migrate")
    assert outcome.exit_code == code and outcome.ran


def test_no_exit_code_is_not_started_with_ecs_reasons() -> None:
    outcome = task_outcome(_task(reason="CannotPullContainerError: denied"), "migrate")

    assert outcome.exit_code == LaunchExit.NOT_STARTED and not outcome.ran
    assert outcome.explanation().endswith(
        "stopCode: EssentialContainerExited; stoppedReason: Essential container in task "
        "exited; container reason: CannotPullContainerError: denied"
    )


def test_a_container_missing_from_the_task_did_not_run() -> None:
    assert task_outcome(_task(exitCode=0), "other").exit_code == LaunchExit.NOT_STARTED


def test_run_task_failures_name_each_reason() -> None:
    assert run_failures(
        [
            {"arn": "arn:cluster/prod", "reason": "MISSING", "detail": "subnet"},
            {"reason": "RESOURCE:MEMORY"},
        ]
    ) == ("arn:cluster/prod MISSING subnet; task RESOURCE:MEMORY")


def test_lines_are_printed_raw_when_not_a_terminal() -> None:
    line = '{"timestamp": "2026-11-30T12:00:01.5Z", "level": "info", "event": "start"}'
    assert render(line, tty=False) == line


def test_json_events_are_readable_on_a_terminal() -> None:
    line = json.dumps(
        {
            "timestamp": "2026-11-30T12:00:01.500000Z",
            "level": "error",
            "event": "error",
            "exit_code": 6,
            "message": "revision a1 failed",
        }
    )
    assert render(line, tty=True) == "12:00:01 error error exit_code=6 message=revision a1 failed"
    assert render("plain text\n", tty=True) == "plain text"


def test_only_the_runners_summary_counts_as_one() -> None:
    assert runner_summary('{"event": "summary", "exit_code": 0}') == {
        "event": "summary",
        "exit_code": 0,
    }
    assert runner_summary('{"event": "start"}') is None
    assert runner_summary("summary") is None


REQUIRED = {
    "MIGRATION_ECS_CLUSTER": "prod",
    "MIGRATION_ECS_TASK_DEFINITION": "orders-migrate",
    "MIGRATION_ECS_SUBNETS": "subnet-1, subnet-2",
    "MIGRATION_ECS_SECURITY_GROUPS": "sg-1",
}


def test_every_option_can_come_from_the_environment() -> None:
    request, pacing = parse(
        ["run"],
        {
            **REQUIRED,
            "MIGRATION_ECS_ASSIGN_PUBLIC_IP": "true",
            "MIGRATION_ECS_CONTAINER": "migrate",
            "MIGRATION_ECS_IMAGE": "repo/migrator:new",
            "MIGRATION_ECS_COMMAND": "downgrade -1",
            "MIGRATION_ECS_TIMEOUT": "900",
            "MIGRATION_ECS_PLATFORM_VERSION": "1.4.0",
            "MIGRATION_ECS_POLL_INTERVAL": "2",
        },
    )

    assert (request.cluster, request.task_definition) == ("prod", "orders-migrate")
    assert request.subnets == ("subnet-1", "subnet-2") and request.security_groups == ("sg-1",)
    assert request.assign_public_ip and request.container == "migrate"
    assert request.image == "repo/migrator:new" and request.command == ("downgrade", "-1")
    assert request.timeout_s == 900 and request.platform_version == "1.4.0"
    assert pacing.max_poll_s == 2


def test_options_win_over_the_environment() -> None:
    request, _ = parse(["run", "--cluster", "staging", "--command", "check"], REQUIRED)
    assert request.cluster == "staging" and request.command == ("check",)


def test_missing_options_are_named_with_their_variables() -> None:
    with pytest.raises(LaunchUsageError) as caught:
        parse(["run", "--cluster", "prod"], {})
    assert caught.value.exit_code == LaunchExit.USAGE
    assert caught.value.message.endswith(
        "needs --task-definition (MIGRATION_ECS_TASK_DEFINITION), --subnets "
        "(MIGRATION_ECS_SUBNETS), --security-groups (MIGRATION_ECS_SECURITY_GROUPS)"
    )


def test_a_bad_timeout_from_the_environment_is_a_usage_error() -> None:
    with pytest.raises(LaunchUsageError, match="--timeout: 'soon' is not a number"):
        parse(["run"], {**REQUIRED, "MIGRATION_ECS_TIMEOUT": "soon"})
