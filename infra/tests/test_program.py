"""The program's wiring, under Pulumi's mocks (offline: no Pulumi CLI, no AWS)."""

import runpy
import json

import pulumi
import pytest

from migration_infra.settings import SettingsError, parse_settings
from tests.conftest import ACCOUNT, INFRA, REGION, FakeAws, RecordingMonitor, run_program

TASK_DEF = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
COMMAND = "command:local:Command"
SERVICE = "aws:ecs/service:Service"


@pytest.fixture
def program(settings):
    return run_program(settings)


def runner_task_definition(program):
    return program.one(TASK_DEF, "migrations-task")


def runner_containers(program):
    return runner_task_definition(program).json("containerDefinitions")


def statements(program, name):
    return {s["Sid"]: s for s in program.one(ROLE_POLICY, name).json("policy")["Statement"]}


def test_no_secret_reaches_the_task_as_plain_environment(program, config):
    [container] = runner_containers(program)
    assert container["secrets"] == [{"name": "DB_SECRET", "valueFrom": config["dbSecretArn"]}]
    names = {item["name"] for item in container["environment"]}
    assert not {"DB_PASSWORD", "DB_SECRET", "DATABASE_URL", "DB_USER"} & names
    assert config["dbSecretArn"] not in json.dumps(container["environment"])


def test_the_runner_task_is_fargate_non_root_read_only_and_pinned_by_digest(program, config):
    task = runner_task_definition(program)
    [container] = task.json("containerDefinitions")
    assert task.inputs["requiresCompatibilities"] == ["FARGATE"]
    assert task.inputs["networkMode"] == "awsvpc"
    assert (task.inputs["cpu"], task.inputs["memory"]) == ("256", "512")
    assert container["user"] == "10001" and container["readonlyRootFilesystem"] is True
    assert container["stopTimeout"] == 30
    repository_url = program.one("aws:ecr/repository:Repository").inputs["repositoryUrl"]
    assert container["image"] == f"{repository_url}@{config['imageDigest']}"


def test_the_task_logs_to_its_own_group_in_blocking_mode(program):
    group = program.one("aws:cloudwatch/logGroup:LogGroup", "migrations-logs")
    assert group.inputs["retentionInDays"] == 90
    [container] = runner_containers(program)
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {"awslogs-group": group.inputs["name"], "awslogs-region": REGION,
                    "awslogs-stream-prefix": "migrate", "mode": "blocking"}}


def test_the_execution_role_names_exactly_this_repository_secret_and_log_group(program, config):
    policy = statements(program, "migrations-execution-policy")
    repository = program.one("aws:ecr/repository:Repository")
    group = program.one("aws:cloudwatch/logGroup:LogGroup", "migrations-logs")
    assert policy["PullImage"]["Resource"] == [repository.inputs["arn"]]
    assert policy["ReadDatabaseSecret"]["Resource"] == [config["dbSecretArn"]]
    assert policy["WriteLogs"]["Resource"] == [f"{group.inputs['arn']}:log-stream:*"]
    assert [sid for sid, s in policy.items() if "*" in json.dumps(s["Resource"])
            and sid != "WriteLogs"] == ["RegistryLogin"]
    role = program.one(ROLE_POLICY, "migrations-execution-policy").inputs["role"]
    assert role == "migrations-execution-id"


def test_the_task_role_has_no_permission_by_default(program):
    task_role = program.one("aws:iam/role:Role", "migrations-task")
    assert runner_task_definition(program).inputs["taskRoleArn"] == task_role.inputs["arn"]
    granted = [p.name for p in program.registered
               if p.typ.startswith("aws:iam/") and p.inputs.get("role") == "migrations-task-id"]
    assert granted == []


def test_with_iam_auth_the_task_role_may_connect_as_the_database_user(config):
    config.update(iamAuth=True, dbUser="migrator", dbResourceId="db-ABCDEFGHIJKL")
    del config["dbSecretArn"], config["app"]
    program = run_program(parse_settings(config, stack="prod"))
    assert statements(program, "migrations-iam-auth")["ConnectAsMigrationUser"]["Resource"] == (
        f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:db-ABCDEFGHIJKL/migrator")
    assert "ReadDatabaseSecret" not in statements(program, "migrations-execution-policy")
    [container] = runner_containers(program)
    assert container["secrets"] == []


def test_before_the_first_image_only_the_repository_is_created(config):
    del config["imageDigest"]
    config["repositoryOnly"] = True
    program = run_program(parse_settings(config, stack="prod"))
    assert sorted(r.typ for r in program.registered) == [
        "aws:ecr/lifecyclePolicy:LifecyclePolicy", "aws:ecr/repository:Repository"]
    assert program.deployment.gate is None


def test_without_the_image_digest_up_is_refused_naming_the_setting(config):
    """A program that declared only the repository would make `pulumi up` delete the rest."""
    del config["imageDigest"]
    with pytest.raises(SettingsError, match=r"imageDigest: required.*stack output imageDigest"):
        parse_settings(config, stack="prod")


def test_what_a_deploy_must_never_delete_is_protected(config):
    config["app"] = {**config["app"], "initContainer": True}
    program = run_program(parse_settings(config, stack="prod"))
    protected = sorted(r.typ for r in program.registered if r.protect)
    assert protected == sorted([
        "aws:ecr/repository:Repository", "aws:ecs/cluster:Cluster",
        "aws:cloudwatch/logGroup:LogGroup", "aws:cloudwatch/logGroup:LogGroup",
        "aws:ecs/service:Service",
        "aws:ecr/lifecyclePolicy:LifecyclePolicy"])  # a child: inherits its parent's protect
    # replaced on every image: a protected task definition would block each deploy
    assert not [r for r in program.all(TASK_DEF) if r.protect]


def test_the_repository_scans_on_push_and_expires_old_images(program):
    repository = program.one("aws:ecr/repository:Repository")
    assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    rules = program.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").json("policy")["rules"]
    assert [r["selection"]["tagStatus"] for r in rules] == ["untagged", "any"]


def test_an_existing_image_is_used_as_pinned_and_pulled_from_its_own_repository(config):
    del config["imageDigest"]
    config["image"] = (f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/shared/runner:v3@sha256:"
                       + "c" * 64)
    program = run_program(parse_settings(config, stack="prod"))
    assert program.all("aws:ecr/repository:Repository") == []
    [container] = runner_containers(program)
    assert container["image"] == config["image"].replace(":v3@", "@")
    assert statements(program, "migrations-execution-policy")["PullImage"]["Resource"] == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/shared/runner"]


def test_the_task_may_reach_the_database_port_and_only_that(program, config):
    egress = program.one("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    ingress = program.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert {k: egress.inputs[k] for k in ("securityGroupId", "referencedSecurityGroupId",
                                          "ipProtocol", "fromPort", "toPort")} == {
        "securityGroupId": config["securityGroupId"],
        "referencedSecurityGroupId": config["dbSecurityGroupId"],
        "ipProtocol": "tcp", "fromPort": 5432, "toPort": 5432}
    assert ingress.inputs["securityGroupId"] == config["dbSecurityGroupId"]
    assert ingress.inputs["referencedSecurityGroupId"] == config["securityGroupId"]


def test_without_the_database_security_group_egress_is_still_the_database_port_only(config):
    del config["dbSecurityGroupId"]
    program = run_program(parse_settings(config, stack="prod"))
    egress = program.one("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert (egress.inputs["cidrIpv4"], egress.inputs["fromPort"], egress.inputs["toPort"]) == (
        "0.0.0.0/0", 5432, 5432)
    assert program.all("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") == []


def test_the_gate_runs_the_launcher_on_the_registered_task_definition(program, config):
    gate = program.one(COMMAND)
    task = runner_task_definition(program)
    assert gate.inputs["create"] == (
        "MIGRATION_ECS_PARENT_PID=$$ migration-runner ecs run --cluster maive-server-prod "
        f"--task-definition {task.inputs['family']}:7 "
        "--subnets subnet-0a1b2c3d4e5f60001,subnet-0a1b2c3d4e5f60002 "
        f"--security-groups {config['securityGroupId']} --container migrate --timeout 1800 "
        "--stop-with-parent & wait $!")
    assert gate.inputs["logging"] == "stdoutAndStderr"  # the task's lines in Pulumi's output
    assert gate.inputs["environment"] == {"AWS_REGION": REGION}
    assert gate.inputs["addPreviousOutputInEnv"] is False  # Linux: 128 KiB per variable
    assert gate.custom_timeouts["create"] == "2400s"
    assert "update" not in gate.inputs  # a trigger change replaces it: `create` runs again
    depends = {program.by_urn(urn).name for urn in gate.dependencies}
    assert {"migrations-task", "migrations-to-database", "migrations-from-runner"} <= depends


def test_the_gate_is_triggered_by_the_image_digest_and_the_migrations_heads(program, config):
    assert program.one(COMMAND).inputs["triggers"] == [config["imageDigest"], "bbb222"]


def test_the_gates_triggers_change_only_with_the_image_or_the_heads(config, versions_dir,
                                                                    tmp_path):
    def triggers(**changes):
        settings = parse_settings({**config, **changes}, stack="prod")
        return run_program(settings).one(COMMAND).inputs["triggers"]

    first = triggers()
    assert triggers(logRetentionDays=30, taskTimeout=600, cpu=512, memory=1024) == first
    assert triggers(imageDigest="sha256:" + "e" * 64) != first
    (versions_dir / "ccc333_next.py").write_text("revision = 'ccc333'\n"
                                                 "down_revision = 'bbb222'\n")
    assert triggers() == [config["imageDigest"], "ccc333"]


def test_the_app_service_update_depends_on_the_gate(program):
    service = program.one(SERVICE)
    gate = program.one(COMMAND)
    assert gate.urn in service.dependencies
    assert service.inputs["platformVersion"] == "1.4.0"
    assert service.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service.inputs["waitForSteadyState"] is True


def test_the_app_reaches_the_database_with_its_secret_and_reports_its_health(program, config):
    [app] = program.one(TASK_DEF, "app-task").json("containerDefinitions")
    env = {item["name"]: item["value"] for item in app["environment"]}
    assert env == {"DB_HOST": config["dbHost"], "DB_PORT": "5432", "DB_NAME": config["dbName"],
                   "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/certs/global-bundle.pem"}
    assert app["secrets"] == [{"name": "DB_SECRET", "valueFrom": config["dbSecretArn"]}]
    assert statements(program, "app-execution-policy")["ReadDatabaseSecret"]["Resource"] == [
        config["dbSecretArn"]]
    check = app["healthCheck"]
    assert check["command"][:3] == ["CMD", "python", "-c"]
    assert "http://127.0.0.1:8080/healthz" in check["command"][3]


def test_the_app_task_runs_only_the_app_unless_the_init_container_is_asked_for(program):
    containers = program.one(TASK_DEF, "app-task").json("containerDefinitions")
    assert [c["name"] for c in containers] == ["app"]
    assert "dependsOn" not in containers[0]


def test_as_init_container_the_runner_is_not_essential_and_the_app_waits_for_success(config):
    config["app"] = {**config["app"], "initContainer": True}
    program = run_program(parse_settings(config, stack="prod"))
    migrate, app = program.one(TASK_DEF, "app-task").json("containerDefinitions")
    assert migrate["name"] == "migrate" and migrate["essential"] is False
    assert migrate["secrets"] == [{"name": "DB_SECRET", "valueFrom": config["dbSecretArn"]}]
    assert app["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
    policy = statements(program, "app-execution-policy")
    assert policy["ReadDatabaseSecret"]["Resource"] == [config["dbSecretArn"]]
    assert len(policy["WriteLogs"]["Resource"]) == 2  # the app's group and the runner's


def test_the_alarm_watches_the_failures_the_runner_reports_for_this_service(program):
    alarm = program.one("aws:cloudwatch/metricAlarm:MetricAlarm")
    [container] = runner_containers(program)
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert alarm.inputs["namespace"] == env["MIGRATION_METRICS_NAMESPACE"] == "MigrationRunner"
    assert alarm.inputs["metricName"] == "Failures"
    assert alarm.inputs["dimensions"] == {"Service": env["MIGRATION_METRICS_SERVICE"],
                                          "Environment": env["MIGRATION_METRICS_ENVIRONMENT"]}
    assert (alarm.inputs["statistic"], alarm.inputs["threshold"],
            alarm.inputs["comparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    assert alarm.inputs["treatMissingData"] == "notBreaching"
    assert alarm.inputs.get("alarmActions", []) == []


def test_the_alarm_notifies_the_sns_topic_when_one_is_given(config):
    config["alarmTopicArn"] = f"arn:aws:sns:{REGION}:{ACCOUNT}:oncall"
    program = run_program(parse_settings(config, stack="prod"))
    alarm = program.one("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert alarm.inputs["alarmActions"] == [config["alarmTopicArn"]]


def test_an_existing_cluster_is_used_and_none_created(config):
    config["clusterName"] = "shared-prod"
    program = run_program(parse_settings(config, stack="prod"))
    assert program.all("aws:ecs/cluster:Cluster") == []
    assert "--cluster shared-prod " in program.one(COMMAND).inputs["create"]
    assert program.one(SERVICE).inputs["cluster"] == "shared-prod"


def run_entry_point(config, aws=None):
    """`__main__.py` as `pulumi up` runs it: structured values arrive as JSON strings."""
    monitor = RecordingMonitor(FakeAws())
    pulumi.runtime.set_mocks(FakeAws(), project="migration-runner", stack="prod",
                             preview=False, monitor=monitor)
    pulumi.runtime.set_all_config({
        f"{namespace}:{key}": value if isinstance(value, str) else json.dumps(value)
        for namespace, values in (("migration-runner", config), ("aws", aws or {}))
        for key, value in values.items()})

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(INFRA / "__main__.py"))

    try:
        program()
    finally:
        pulumi.runtime.set_all_config({})
    return monitor.registered


def test_the_entry_point_reads_the_stack_config_as_pulumi_stores_it(config):
    types = {r.typ for r in run_entry_point(config)}
    assert {TASK_DEF, COMMAND, SERVICE, "aws:cloudwatch/metricAlarm:MetricAlarm"} <= types


def test_the_gate_acts_with_the_stacks_aws_identity_not_only_the_machines(config):
    """pulumi-command runs the launcher with the machine's environment; the stack's provider
    may use a profile or assume a role the machine's credentials are not."""
    role = {"roleArn": f"arn:aws:iam::{ACCOUNT}:role/deployer", "externalId": "maive",
            "sessionName": "pulumi-up"}
    [gate] = [r for r in run_entry_point(config, aws={"profile": "maive-prod",
                                                       "assumeRole": role})
              if r.typ == COMMAND]
    assert gate.inputs["environment"] == {
        "AWS_REGION": REGION, "AWS_PROFILE": "maive-prod",
        "MIGRATION_ECS_ROLE_ARN": role["roleArn"], "MIGRATION_ECS_ROLE_EXTERNAL_ID": "maive",
        "MIGRATION_ECS_ROLE_SESSION_NAME": "pulumi-up"}


def test_a_rollback_deploy_may_find_the_database_ahead_when_the_stack_says_so(config):
    def env(program):
        [container] = runner_containers(program)
        return {item["name"]: item["value"] for item in container["environment"]}

    assert "MIGRATION_ALLOW_DATABASE_AHEAD" not in env(run_program(parse_settings(
        config, stack="prod")))
    config["allowDatabaseAhead"] = True
    assert env(run_program(parse_settings(config, stack="prod")))[
        "MIGRATION_ALLOW_DATABASE_AHEAD"] == "true"


EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def test_a_shared_group_that_reaches_the_database_gets_no_duplicate_rules(config):
    """The app's group already has these rules: AWS refuses a duplicate on the first `up`."""
    config["databaseRules"] = False
    program = run_program(parse_settings(config, stack="prod"))
    assert program.all(EGRESS) == [] and program.all(INGRESS) == []
    assert f"--security-groups {config['securityGroupId']} " in program.one(COMMAND).inputs[
        "create"]


def test_with_only_the_vpc_the_task_gets_its_own_group_with_https_and_database_out(config):
    app_group = config["securityGroupId"]
    del config["securityGroupId"]
    config["vpcId"] = "vpc-0a1b2c3d4e5f60000"
    config["app"] = {**config["app"], "securityGroupId": app_group}
    program = run_program(parse_settings(config, stack="prod"))
    group = program.one("aws:ec2/securityGroup:SecurityGroup")
    assert group.inputs["vpcId"] == "vpc-0a1b2c3d4e5f60000"
    group_id = "migrations-group-id"
    egress = {r.name: r.inputs for r in program.all(EGRESS)}
    assert {name: (rule["securityGroupId"], rule["fromPort"], rule["toPort"])
            for name, rule in egress.items()} == {
        "migrations-https-out": (group_id, 443, 443),
        "migrations-to-database": (group_id, 5432, 5432)}
    assert egress["migrations-to-database"]["referencedSecurityGroupId"] == config[
        "dbSecurityGroupId"]
    assert program.one(INGRESS).inputs["referencedSecurityGroupId"] == group_id
    assert f"--security-groups {group_id} " in program.one(COMMAND).inputs["create"]
    network = program.one(SERVICE).inputs["networkConfiguration"]
    assert network["securityGroups"] == [app_group]
    depends = {program.by_urn(urn).name for urn in program.one(COMMAND).dependencies}
    assert {"migrations-group", "migrations-https-out"} <= depends
