"""The launcher's pure decisions: container choice, the new revision, the log stream name,
the outcome of a stopped task, RunTask failures, rendering, and the command line."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from runner.ecs import runargs, taskdef
from runner.ecs.aws_errors import failure_text, transient
from runner.ecs.cli import parse
from runner.ecs.errors import LaunchExit, LaunchUsageError
from runner.ecs.logs_tail import render, runner_summary
from runner.ecs.outcome import over, run_exit, run_failures, task_outcome


def _ecs_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("ecs")


REGISTERABLE = runargs.registerable(_ecs_model())
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
        DESCRIBED,
        [{"key": "team", "value": "orders"}],
        "migrate",
        "repo/migrator:new",
        REGISTERABLE,
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


def test_every_field_register_accepts_is_copied_as_botocore_knows_them() -> None:
    """The copied fields come from botocore's model: one the hand list missed is kept."""
    trusted = {"isolationMode": "ENCLAVE", "attestationPolicy": "strict"}
    request = taskdef.with_image(
        {**DESCRIBED, "trustedExecutionConfiguration": trusted},
        None,
        "migrate",
        "repo/migrator:new",
        REGISTERABLE,
    )
    assert request["trustedExecutionConfiguration"] == trusted
    # what DescribeTaskDefinition has but RegisterTaskDefinition does not take
    assert (
        not {
            "taskDefinitionArn",
            "revision",
            "status",
            "compatibilities",
            "registeredAt",
            "registeredBy",
            "requiresAttributes",
            "tags",
        }
        & REGISTERABLE
    )
    described = set(_ecs_model().shape_for("TaskDefinition").members)
    assert REGISTERABLE <= described  # everything registrable is described back


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
    assert caught.value.message.endswith("needs --task-definition (MIGRATION_ECS_TASK_DEFINITION)")


def test_a_bad_timeout_from_the_environment_is_a_usage_error() -> None:
    with pytest.raises(LaunchUsageError, match="--timeout: 'soon' is not a number"):
        parse(["run"], {**REQUIRED, "MIGRATION_ECS_TIMEOUT": "soon"})


def request(*argv: str, **environ: str) -> Any:
    return parse(
        ["run", "--cluster", "prod", "--task-definition", "orders-migrate", *argv], environ
    )[0]


AWSVPC = ("--subnets", "subnet-1", "--security-groups", "sg-1")
SERVICE = {
    "serviceName": "orders",
    "status": "ACTIVE",
    "launchType": "FARGATE",
    "platformVersion": "1.4.0",
    "networkConfiguration": {
        "awsvpcConfiguration": {
            "subnets": ["subnet-9"],
            "securityGroups": ["sg-9"],
            "assignPublicIp": "DISABLED",
        }
    },
}
BRIDGE = {**DESCRIBED, "networkMode": "bridge", "requiresCompatibilities": ["EC2"]}


def args_for(
    req: Any, definition: dict[str, Any] = DESCRIBED, service: dict[str, Any] | None = None
) -> dict[str, Any]:
    return runargs.run_task_args(req, definition, "migrate", service, "migration-runner")


def test_fargate_awsvpc_is_the_default() -> None:
    args = args_for(request(*AWSVPC))
    assert args["launchType"] == "FARGATE" and "capacityProviderStrategy" not in args
    assert args["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-1"],
            "securityGroups": ["sg-1"],
            "assignPublicIp": "DISABLED",
        }
    }


def test_capacity_providers_replace_the_launch_type() -> None:
    args = args_for(request(*AWSVPC, "--capacity-provider-strategy", "FARGATE_SPOT:3,FARGATE:1:1"))
    assert "launchType" not in args
    assert args["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 3, "base": 0},
        {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
    ]
    with pytest.raises(LaunchUsageError, match="exclude each other"):
        request("--launch-type", "EC2", "--capacity-provider-strategy", "FARGATE")
    with pytest.raises(LaunchUsageError, match="not NAME"):
        request("--capacity-provider-strategy", "FARGATE:many")


def test_a_bridge_task_definition_runs_on_ec2_without_network_and_is_refused_on_fargate() -> None:
    args = args_for(request("--launch-type", "EC2"), BRIDGE)
    assert args["launchType"] == "EC2" and "networkConfiguration" not in args
    with pytest.raises(LaunchUsageError, match="network mode bridge: Fargate runs only awsvpc"):
        args_for(request(*AWSVPC), BRIDGE)
    with pytest.raises(LaunchUsageError, match="takes no --subnets"):
        args_for(request("--launch-type", "EC2", *AWSVPC), BRIDGE)
    with pytest.raises(LaunchUsageError, match="--platform-version is Fargate's"):
        args_for(request("--launch-type", "EC2", "--platform-version", "1.4.0"), BRIDGE)


def test_awsvpc_without_a_network_names_both_ways_to_give_one() -> None:
    with pytest.raises(
        LaunchUsageError, match="--subnets and --security-groups.*--network-from-service"
    ):
        args_for(request())
    with pytest.raises(LaunchUsageError, match="go together"):
        args_for(request("--subnets", "subnet-1"))


def test_the_network_and_placement_can_come_from_a_service() -> None:
    args = args_for(request("--network-from-service", "orders"), service=SERVICE)
    assert args["networkConfiguration"] == SERVICE["networkConfiguration"]
    assert (args["launchType"], args["platformVersion"]) == ("FARGATE", "1.4.0")
    spot = {
        **SERVICE,
        "launchType": None,
        "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 0}],
    }
    args = args_for(request("--network-from-service", "orders"), service=spot)
    assert args["capacityProviderStrategy"] == spot["capacityProviderStrategy"]
    # what the command line gives wins
    args = args_for(request("--network-from-service", "orders", *AWSVPC), service=SERVICE)
    assert args["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-1"]


def test_environment_size_overrides_and_tags() -> None:
    req = request(
        *AWSVPC,
        "--env",
        "MIGRATION_ALLOW_DATABASE_AHEAD=true",
        "--env",
        "A=b=c",
        "--cpu",
        "1024",
        "--memory",
        "2048",
        "--tag",
        "deploy=42",
        "--propagate-tags",
        "TASK_DEFINITION",
        "--command",
        "check",
        MIGRATION_ECS_TAGS="team=orders",
    )
    args = args_for(req)
    assert args["overrides"] == {
        "containerOverrides": [
            {
                "name": "migrate",
                "command": ["check"],
                "environment": [
                    {"name": "MIGRATION_ALLOW_DATABASE_AHEAD", "value": "true"},
                    {"name": "A", "value": "b=c"},
                ],
            }
        ],
        "cpu": "1024",
        "memory": "2048",
    }
    assert args["tags"] == [{"key": "team", "value": "orders"}, {"key": "deploy", "value": "42"}]
    assert args["propagateTags"] == "TASK_DEFINITION"
    assert "overrides" not in args_for(request(*AWSVPC))


def test_a_malformed_pair_in_the_environment_is_a_usage_error_that_does_not_quote_it() -> None:
    with pytest.raises(LaunchUsageError, match="MIGRATION_ECS_ENV: an item of 7 ch") as raised:
        request(MIGRATION_ECS_ENV="NOVALUE")
    assert "NOVALUE" not in raised.value.message


def test_the_command_is_the_rest_of_the_line_even_with_a_double_dash() -> None:
    req = request(*AWSVPC, "--command", "upgrade", "--then", "--", "uvicorn", "--port", "80")
    assert req.command == ("upgrade", "--then", "--", "uvicorn", "--port", "80")
    assert req.subnets == ("subnet-1",)


def test_tags_reserved_for_aws_are_not_copied_to_the_new_revision() -> None:
    """RegisterTaskDefinition refuses tag keys prefixed ``aws:`` (any case), which AWS itself
    puts on resources (CloudFormation's ``aws:cloudformation:stack-name``): before, ``--image``
    on such a task definition failed with InvalidParameterException."""
    tags = [
        {"key": "aws:cloudformation:stack-name", "value": "orders"},
        {"key": "AWS:Owner", "value": "x"},
        {"key": "team", "value": "orders"},
    ]
    request = taskdef.with_image(DESCRIBED, tags, "migrate", "repo/migrator:new", REGISTERABLE)
    assert request["tags"] == [{"key": "team", "value": "orders"}]
    only_reserved = taskdef.with_image(DESCRIBED, tags[:2], "migrate", "r:1", REGISTERABLE)
    assert "tags" not in only_reserved


@pytest.mark.parametrize("option", ["--timeout", "--poll-interval", "--drain"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e12"])
def test_seconds_that_are_not_a_finite_wait_are_a_usage_error(option: str, value: str) -> None:
    """``--poll-interval 1e12`` is finite but past what a thread can wait: it ended the first
    pause in an OverflowError reported as the launcher's own bug."""
    with pytest.raises(LaunchUsageError, match=f"{option}"):
        request(*AWSVPC, option, value)


@pytest.mark.parametrize(
    ("name", "value"), [("LAUNCH_TYPE", "fargate"), ("PROPAGATE_TAGS", "SERVICE")]
)
def test_a_choice_from_the_environment_is_checked_like_the_options(name: str, value: str) -> None:
    """argparse checks ``choices`` for a value on the command line, not for a default: before,
    ``MIGRATION_ECS_LAUNCH_TYPE=fargate`` went to RunTask as it was."""
    with pytest.raises(LaunchUsageError, match=f"MIGRATION_ECS_{name}.*'{value}'"):
        request(*AWSVPC, **{f"MIGRATION_ECS_{name}": value})


def _stopped(exit_code: int | None, status: str = "STOPPED") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "migrate", "lastStatus": status}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return {"lastStatus": "STOPPED", "containers": [container]}


@pytest.mark.parametrize(
    ("exit_code", "stopped_by", "ran", "runner_exit", "expected"),
    [
        (6, None, True, 6, 6),  # not stopped: the container's own code
        (None, None, False, None, 43),  # stopped on its own, never ran
        (0, "timeout", True, 0, 0),  # it finished as the timeout came: migrated
        (0, "SIGTERM", True, 0, 0),
        (0, "timeout", True, None, 44),  # an exit 0 without the runner's word for it
        (130, "timeout", True, 130, 44),  # the runner stopped and rolled back
        (130, "SIGTERM", True, 130, 45),
        (None, "timeout", False, None, 43),  # stuck in PROVISIONING: nothing ran
        (None, "timeout", True, None, 44),  # it ran, killed without an exit code
        (None, "SIGTERM", False, None, 45),  # cancelled: the operator's stop
    ],
)
def test_the_exit_code_is_what_happened_to_the_migration(
    exit_code: int | None, stopped_by: str | None, ran: bool, runner_exit: int | None, expected: int
) -> None:
    outcome = task_outcome(_stopped(exit_code), "migrate")
    assert run_exit(outcome, stopped_by, ran, runner_exit) == expected


def test_no_outcome_after_a_stop_is_the_stops_code() -> None:
    assert run_exit(None, "timeout", True, None) == 44
    assert run_exit(None, "SIGTERM", True, None) == 45


def test_following_is_over_once_the_migration_container_exited() -> None:
    running = {"lastStatus": "RUNNING", "containers": [{"name": "migrate", "exitCode": 0}]}
    assert not over(running, "migrate")  # an exit code without STOPPED: not one yet
    running["containers"][0]["lastStatus"] = "STOPPED"
    assert over(running, "migrate") and not over(running, "app")
    assert over({"lastStatus": "STOPPED", "containers": []}, "migrate")


class _ClientError(Exception):
    def __init__(self, code: str, status: int = 400) -> None:
        super().__init__(code)
        self.operation_name = "DescribeTasks"
        self.response = {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }


class HTTPClientError(Exception):  # botocore's base of the network failures, by name
    pass


class EndpointConnectionError(HTTPClientError):
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_ClientError("ThrottlingException"), True),
        (_ClientError("ServerException", 500), True),
        (_ClientError("Whatever", 503), True),
        (_ClientError("Whatever", 429), True),
        (EndpointConnectionError("no route"), True),
        (_ClientError("AccessDeniedException"), False),
        (_ClientError("ClusterNotFoundException"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_is_worth_asking_again(error: Exception, expected: bool) -> None:
    assert transient(error) is expected


def test_a_failure_is_named_by_its_operation_and_code() -> None:
    assert failure_text(_ClientError("ThrottlingException")) == (
        "DescribeTasks failed: ThrottlingException: m"
    )
    assert failure_text(EndpointConnectionError("no route")) == "EndpointConnectionError: no route"


@pytest.mark.parametrize(
    ("extra", "environ", "says"),
    [
        (["--parent-pid", "123"], {}, "goes with --stop-with-parent"),
        (["--stop-with-parent", "--parent-pid", "0"], {}, "is not a process id"),
        (["--stop-with-parent"], {"MIGRATION_ECS_PARENT_PID": "$$"}, "is not a process id"),
    ],
)
def test_a_parent_pid_is_a_process_id_with_stop_with_parent(
    extra: list[str], environ: dict[str, str], says: str
) -> None:
    with pytest.raises(LaunchUsageError, match=says):
        request(*extra, **environ)


def test_the_gates_parent_pid_reaches_the_request() -> None:
    asked = request("--stop-with-parent", MIGRATION_ECS_PARENT_PID="4242")
    assert (asked.stop_with_parent, asked.parent_pid) == (True, 4242)
