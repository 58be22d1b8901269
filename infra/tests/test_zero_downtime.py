"""The deploy path of docs/zero-downtime.md, under Pulumi's mocks (offline): the expand gate
before the app's service update, the contract gate once the service is stable (`phases`), and
a snapshot before migrating with exactly the IAM actions it needs (`snapshot`)."""

import json

import pytest

from migration_infra import policies
from migration_infra.settings import SettingsError, parse_settings
from tests.conftest import ACCOUNT, REGION, run_program

TASK_DEF = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
COMMAND = "command:local:Command"
SERVICE = "aws:ecs/service:Service"
RDS = f"arn:aws:rds:{REGION}:{ACCOUNT}"


def program_with(config, **changes):
    return run_program(parse_settings({**config, **changes}, stack="prod"))


def runner_container(program):
    [container] = program.one(TASK_DEF, "migrations-task").json("containerDefinitions")
    return container


def environment(container):
    return {item["name"]: item["value"] for item in container["environment"]}


def task_role_policies(program):
    return {p.name: p.json("policy") for p in program.all(ROLE_POLICY)
            if p.inputs.get("role") == "migrations-task-id"}


def depends(program, resource):
    return {program.by_urn(urn).name for urn in resource.dependencies}


# -- phases ---------------------------------------------------------------------------------

def test_by_default_one_gate_runs_the_task_definitions_plain_upgrade(settings):
    program = run_program(settings)
    [gate] = program.all(COMMAND)
    assert "--command" not in gate.inputs["create"]
    assert runner_container(program)["command"] == ["upgrade"]
    assert program.deployment.contract_gate is None


def test_with_phases_the_gate_before_the_service_update_runs_the_expand_phase(config):
    program = program_with(config, phases=True)
    gate = program.one(COMMAND, "migration-gate-run")
    assert gate.inputs["create"].endswith(
        " --stop-with-parent --command upgrade --phase expand & wait $!")
    service = program.one(SERVICE)
    assert gate.urn in service.dependencies
    # a task started without a command (an operator's `ecs run`, the init container) expands
    assert runner_container(program)["command"] == ["upgrade", "--phase", "expand"]


def test_with_phases_a_second_gate_contracts_once_the_service_is_stable(config):
    program = program_with(config, phases=True)
    expand = program.one(COMMAND, "migration-gate-run")
    contract = program.one(COMMAND, "migration-contract-run")
    service = program.one(SERVICE)
    assert contract.inputs["create"] == expand.inputs["create"].replace(
        "--command upgrade --phase expand", "--command upgrade --phase contract")
    assert service.inputs["waitForSteadyState"] is True  # its update ends when stable
    assert service.urn in contract.dependencies
    assert {"app-service", "migration-gate-run", "migrations-task"} <= depends(program, contract)
    assert contract.urn not in service.dependencies
    assert contract.inputs["triggers"] == expand.inputs["triggers"]
    assert contract.custom_timeouts == expand.custom_timeouts
    assert contract.inputs["environment"] == expand.inputs["environment"]


def test_with_phases_the_init_container_expands_only(config):
    config["app"] = {**config["app"], "initContainer": True}
    program = program_with(config, phases=True)
    migrate, _ = program.one(TASK_DEF, "app-task").json("containerDefinitions")
    assert migrate["command"] == ["upgrade", "--phase", "expand"]


def test_phases_without_the_app_service_are_refused_naming_the_setting(config):
    del config["app"]
    with pytest.raises(SettingsError, match="phases: needs `app`"):
        parse_settings({**config, "phases": True}, stack="prod")


# -- snapshot -------------------------------------------------------------------------------

def test_an_instance_snapshot_reaches_the_container_and_the_task_role_only_for_that(config):
    program = program_with(config, snapshot="instance", taskTimeout=3600)
    env = environment(runner_container(program))
    # the identifier is read from the RDS endpoint in dbHost (maive-prod.abc...rds...)
    assert (env["MIGRATION_SNAPSHOT"], env["MIGRATION_SNAPSHOT_IDENTIFIER"]) == (
        "instance", "maive-prod")
    assert "MIGRATION_SNAPSHOT_TIMEOUT" not in env  # the runner's default
    assert task_role_policies(program) == {"migrations-snapshot": {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "SnapshotBeforeMigrating", "Effect": "Allow",
                       "Action": ["rds:CreateDBSnapshot", "rds:DescribeDBSnapshots",
                                  "rds:AddTagsToResource"],
                       "Resource": [f"{RDS}:db:maive-prod",
                                    f"{RDS}:snapshot:maive-prod-pre-migration-*"]}]}}
    task = program.one(TASK_DEF, "migrations-task")
    assert program.one(ROLE_POLICY, "migrations-snapshot").urn in task.dependencies


def test_a_cluster_snapshot_gets_the_cluster_snapshot_actions_on_that_cluster(config):
    program = program_with(config, snapshot="cluster", snapshotIdentifier="Maive-Aurora",
                           snapshotTimeout=900)
    env = environment(runner_container(program))
    assert (env["MIGRATION_SNAPSHOT"], env["MIGRATION_SNAPSHOT_IDENTIFIER"],
            env["MIGRATION_SNAPSHOT_TIMEOUT"]) == ("cluster", "maive-aurora", "900")
    [statement] = task_role_policies(program)["migrations-snapshot"]["Statement"]
    assert statement["Action"] == ["rds:CreateDBClusterSnapshot",
                                   "rds:DescribeDBClusterSnapshots", "rds:AddTagsToResource"]
    assert statement["Resource"] == [f"{RDS}:cluster:maive-aurora",
                                     f"{RDS}:cluster-snapshot:maive-aurora-pre-migration-*"]


def test_with_snapshots_the_init_container_runs_with_the_runners_task_role(config):
    config["app"] = {**config["app"], "initContainer": True}
    program = program_with(config, snapshot="instance", taskTimeout=3600)
    role = program.one("aws:iam/role:Role", "migrations-task")
    assert program.one(TASK_DEF, "app-task").inputs["taskRoleArn"] == role.inputs["arn"]
    migrate, _ = program.one(TASK_DEF, "app-task").json("containerDefinitions")
    assert environment(migrate)["MIGRATION_SNAPSHOT"] == "instance"


@pytest.mark.parametrize("changes, named", [
    ({"snapshot": "always"}, "snapshot: one of off, instance, cluster"),
    ({"snapshot": "instance", "dbHost": "db.internal"}, "snapshotIdentifier: required"),
    ({"snapshot": "instance", "snapshotIdentifier": "db*"}, "snapshotIdentifier: an RDS"),
    ({"snapshot": "cluster", "snapshotTimeout": 1800}, "taskTimeout: 1800 s leaves no time"),
    ({"snapshot": "instance", "taskTimeout": 1200}, "taskTimeout: 1200 s leaves no time"),
    ({"snapshot": "instance", "snapshotTimeout": 0}, "snapshotTimeout: seconds, more than 0"),
])
def test_a_snapshot_the_runner_could_not_take_is_refused_naming_the_setting(config, changes,
                                                                            named):
    with pytest.raises(SettingsError, match=named.replace("*", r"\*")):
        parse_settings({**config, **changes}, stack="prod")


def test_snapshots_off_grant_nothing_and_set_nothing(config):
    program = program_with(config, snapshot="off", snapshotIdentifier="ignored")
    assert not any(name.startswith("MIGRATION_SNAPSHOT")
                   for name in environment(runner_container(program)))
    assert task_role_policies(program) == {}


@pytest.mark.parametrize("identifier", ["", "*", "db-*", "a/b", "db:x"])
def test_the_snapshot_policy_names_one_database(identifier):
    with pytest.raises(policies.PolicyError):
        policies.snapshot_policy(kind="instance", partition="aws", region=REGION,
                                 account_id=ACCOUNT, identifier=identifier)


def test_the_snapshot_policy_knows_no_other_kind():
    with pytest.raises(policies.PolicyError):
        policies.snapshot_policy(kind="off", partition="aws", region=REGION,
                                 account_id=ACCOUNT, identifier="maive-prod")
    assert json.dumps(policies.SNAPSHOT_ACTIONS).count("*") == 0
