"""The runner's resources on AWS: image repository, log group, roles, Fargate task definition,
database egress, and the alarm on failed runs."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from migration_infra import policies
from migration_infra.containers import RUNNER_CONTAINER, RunnerContainer, runner_container
from migration_infra.images import ecr_repository_arn
from migration_infra.metrics import FAILURES, RunnerMetrics
from migration_infra.settings import StackSettings

# Keep the last images (a rollback deploys an older one); untagged layers go after a week.
KEEP_IMAGES = 30


def ecr_lifecycle_policy(keep: int = KEEP_IMAGES, untagged_days: int = 7) -> dict:
    return {"rules": [
        {"rulePriority": 1, "description": f"untagged images after {untagged_days} days",
         "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                       "countUnit": "days", "countNumber": untagged_days},
         "action": {"type": "expire"}},
        {"rulePriority": 2, "description": f"keep the last {keep} images",
         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                       "countNumber": keep},
         "action": {"type": "expire"}},
    ]}


def image_repository(name: str, repository_name: str) -> aws.ecr.Repository:
    """The runner's ECR repository: immutable tags, scanned on push, old images expired."""
    repository = aws.ecr.Repository(
        name, name=repository_name, image_scanning_configuration={"scan_on_push": True},
        image_tag_mutability="IMMUTABLE", opts=pulumi.ResourceOptions(protect=True))
    aws.ecr.LifecyclePolicy(f"{name}-lifecycle", repository=repository.name,
                            policy=json.dumps(ecr_lifecycle_policy()),
                            opts=pulumi.ResourceOptions(parent=repository))
    return repository


def fargate_task_definition(name: str, *, family: str, cpu: int, memory: int,
                            architecture: str, execution_role_arn: pulumi.Input[str],
                            task_role_arn: pulumi.Input[str] | None,
                            container_definitions: pulumi.Input[str],
                            opts: pulumi.ResourceOptions) -> aws.ecs.TaskDefinition:
    """A Linux Fargate task definition (awsvpc networking) of the given size."""
    return aws.ecs.TaskDefinition(
        name, family=family, requires_compatibilities=["FARGATE"], network_mode="awsvpc",
        cpu=str(cpu), memory=str(memory),
        runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": architecture},
        execution_role_arn=execution_role_arn, task_role_arn=task_role_arn,
        container_definitions=container_definitions, opts=opts)


def runner_environment(metrics: RunnerMetrics, settings: StackSettings) -> dict[str, str]:
    """The runner's settings beyond the database's: the metric names and, for a rollback
    deploy (an older image on a database its migrations do not know), the permission to find
    the database ahead and exit 0 instead of 8 (MIGRATION_ALLOW_DATABASE_AHEAD); with
    `snapshot`, the snapshot to take before migrating (MIGRATION_SNAPSHOT*)."""
    environment = metrics.container_environment()
    if settings.allow_database_ahead:
        environment["MIGRATION_ALLOW_DATABASE_AHEAD"] = "true"
    if settings.snapshot != "off":
        environment["MIGRATION_SNAPSHOT"] = settings.snapshot
        environment["MIGRATION_SNAPSHOT_IDENTIFIER"] = settings.snapshot_identifier or ""
        if settings.snapshot_timeout is not None:
            environment["MIGRATION_SNAPSHOT_TIMEOUT"] = str(settings.snapshot_timeout)
    return environment


def runner_command(settings: StackSettings, phase: str | None = None) -> tuple[str, ...]:
    """The runner's command: `upgrade`, or with `phases` `upgrade --phase <phase>` (expand
    unless told): the task definition's own command is then expand, so a task started without
    a command -- the init container before each app task, an operator's `ecs run` -- never
    applies a contract revision while the old code may still run."""
    if not settings.phases:
        return ("upgrade",)
    return ("upgrade", "--phase", phase or "expand")


class MigrationTask(pulumi.ComponentResource):
    """Everything the one-off migration task needs; `pulumi up` registers a new task definition
    revision whenever the image or a setting changes. The image is `repository@imageDigest`
    when `repository` (created by `image_repository`) is given, else the settings' image.

    Outputs: `image_uri`, `image_digest`, `task_definition` (the resource), `task_definition_ref`
    (`family:revision`), `container_definition` (the runner's, for an init container),
    `repository_arn` (or None), `log_group`, `execution_role`, `task_role`, `alarm`.
    """

    def __init__(self, name: str, settings: StackSettings,
                 repository: aws.ecr.Repository | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("migration-runner:index:MigrationTask", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOptions(parent=self)
        region = aws.get_region_output(opts=invoke).region
        base = f"{settings.service}-{settings.environment}"
        metrics = RunnerMetrics(service=settings.service, environment=settings.environment)

        if repository is not None:
            self.image_digest: pulumi.Input[str] = settings.image_digest or ""
            self.image_uri = pulumi.Output.concat(repository.repository_url, "@",
                                                  settings.image_digest or "")
            self.repository_arn: pulumi.Output[str | None] = repository.arn
        elif settings.image is not None:
            self.image_digest = settings.image.digest
            self.image_uri = pulumi.Output.from_input(settings.image.uri)
            self.repository_arn = pulumi.Output.from_input(
                ecr_repository_arn(settings.image.repository))
        else:
            raise ValueError("MigrationTask needs the repository created here or an image")

        log_group_name = f"/ecs/{base}/migrations"
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=log_group_name,
            retention_in_days=settings.log_retention_days,
            opts=pulumi.ResourceOptions(parent=self, protect=True))

        assume = json.dumps(policies.assume_role_policy())
        self.execution_role = aws.iam.Role(f"{name}-execution", assume_role_policy=assume,
                                           description="Starts the migration task",
                                           opts=child)
        self.execution_policy = aws.iam.RolePolicy(
            f"{name}-execution-policy", role=self.execution_role.id,
            policy=pulumi.Output.all(self.repository_arn, self.log_group.arn).apply(
                lambda args: json.dumps(policies.execution_role_policy(
                    repository_arns=[args[0]] if args[0] else [],
                    secret_arns=[settings.db_secret_arn] if settings.db_secret_arn else [],
                    kms_key_arns=([settings.db_secret_kms_key_arn]
                                  if settings.db_secret_kms_key_arn else []),
                    log_group_arns=[args[1]]))),
            opts=child)
        self.task_role = aws.iam.Role(f"{name}-task", assume_role_policy=assume,
                                      description="The migration task's own identity",
                                      opts=child)
        task_policies = self._task_role_policies(name, settings, self.task_role, region,
                                                 invoke, child)

        self.container_definition = pulumi.Output.all(
            self.image_uri, self.log_group.name, region).apply(
            lambda args: runner_container(RunnerContainer(
                image=args[0], log_group=args[1], region=args[2],
                db_host=settings.db_host, db_port=settings.db_port, db_name=settings.db_name,
                db_secret_arn=settings.db_secret_arn, db_user=settings.db_user,
                ssl_mode=settings.db_ssl_mode, iam_auth=settings.iam_auth,
                stop_timeout=settings.stop_timeout, command=runner_command(settings),
                extra_environment=runner_environment(metrics, settings))))
        self.task_definition = fargate_task_definition(
            f"{name}-task", family=f"{base}-migrate", cpu=settings.cpu, memory=settings.memory,
            architecture=settings.cpu_architecture, execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn,
            container_definitions=self.container_definition.apply(lambda c: json.dumps([c])),
            opts=pulumi.ResourceOptions(parent=self,
                                        depends_on=[self.execution_policy, *task_policies]))
        self.task_definition_ref = pulumi.Output.concat(
            self.task_definition.family, ":", self.task_definition.revision.apply(str))
        self.container_name = RUNNER_CONTAINER

        self.security_group_id, group = self._task_group(name, settings, child)
        self.network_rules = [*group,
                              *self._database_access(name, settings, self.security_group_id,
                                                     child)]
        self.alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-failed",
            name=f"{base}-migration-failed",
            alarm_description=(f"A migration run of {settings.service} ({settings.environment}) "
                               f"failed: read the `error` event in {log_group_name}"),
            namespace=metrics.namespace, metric_name=FAILURES, dimensions=metrics.dimensions(),
            statistic="Sum", period=300, evaluation_periods=1, threshold=0,
            comparison_operator="GreaterThanThreshold", treat_missing_data="notBreaching",
            alarm_actions=[settings.alarm_topic_arn] if settings.alarm_topic_arn else [],
            opts=child)
        self.register_outputs({"image_uri": self.image_uri,
                               "task_definition_arn": self.task_definition.arn,
                               "log_group": self.log_group.name})

    @staticmethod
    def _task_role_policies(name: str, settings: StackSettings, role: aws.iam.Role,
                            region: pulumi.Output[str], invoke: pulumi.InvokeOptions,
                            child: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """What the task itself may do: none by default; with `iamAuth`, connect as the
        database user; with `snapshot`, snapshot the database (`policies.snapshot_policy`)."""
        documents = []
        if settings.iam_auth:
            documents.append(("iam-auth", lambda partition, region, account:
                              policies.iam_auth_policy(
                                  partition=partition, region=region, account_id=account,
                                  db_resource_id=settings.db_resource_id or "",
                                  db_user=settings.db_user or "")))
        if settings.snapshot != "off":
            documents.append(("snapshot", lambda partition, region, account:
                              policies.snapshot_policy(
                                  kind=settings.snapshot, partition=partition, region=region,
                                  account_id=account,
                                  identifier=settings.snapshot_identifier or "")))
        if not documents:
            return []
        account = aws.get_caller_identity_output(opts=invoke).account_id
        partition = aws.get_partition_output(opts=invoke).partition
        return [aws.iam.RolePolicy(
            f"{name}-{suffix}", role=role.id,
            policy=pulumi.Output.all(partition, region, account).apply(
                lambda args, document=document: json.dumps(document(*args))),
            opts=child) for suffix, document in documents]

    @staticmethod
    def _task_group(name: str, settings: StackSettings, child: pulumi.ResourceOptions
                    ) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
        """The task's security group: the one given, or one created in `vpcId` whose only
        egress is HTTPS (ECR, Secrets Manager, CloudWatch Logs; a group Pulumi creates has no
        egress rule at all) -- the database port is added by `_database_access`."""
        if settings.security_group_id is not None:
            return pulumi.Output.from_input(settings.security_group_id), []
        group = aws.ec2.SecurityGroup(
            f"{name}-group", name=f"{settings.service}-{settings.environment}-migrations",
            vpc_id=settings.vpc_id, description="migration-runner task", opts=child)
        https = aws.vpc.SecurityGroupEgressRule(
            f"{name}-https-out", security_group_id=group.id, cidr_ipv4="0.0.0.0/0",
            ip_protocol="tcp", from_port=443, to_port=443,
            description="ECR, Secrets Manager, CloudWatch Logs", opts=child)
        return group.id, [group, https]

    @staticmethod
    def _database_access(name: str, settings: StackSettings, group_id: pulumi.Input[str],
                         child: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """Egress from the task's security group to the database port only; with the
        database's security group given, to that group alone, and its matching ingress.
        None with `databaseRules: false` (a shared group that reaches the database already:
        AWS refuses a duplicate rule)."""
        if not settings.database_rules:
            return []
        port = {"ip_protocol": "tcp", "from_port": settings.db_port,
                "to_port": settings.db_port}
        if settings.db_security_group_id is None:
            return [aws.vpc.SecurityGroupEgressRule(
                f"{name}-to-database", security_group_id=group_id,
                cidr_ipv4="0.0.0.0/0", description="migration-runner to PostgreSQL",
                **port, opts=child)]
        return [
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-to-database", security_group_id=group_id,
                referenced_security_group_id=settings.db_security_group_id,
                description="migration-runner to PostgreSQL", **port, opts=child),
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-from-runner", security_group_id=settings.db_security_group_id,
                referenced_security_group_id=group_id,
                description="PostgreSQL from migration-runner", **port, opts=child),
        ]
