"""The app side, as an example: the FastAPI service whose update waits for the gate.

Its task definition holds the app container and, optionally, the runner as an init container
(the app starts only after the runner exited 0). Either way the service `depends_on` the gate, so
`pulumi up` rolls out a new app version only after the migration task succeeded.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from migration_infra import policies
from migration_infra.containers import (app_container, database_environment,
                                        with_init_container)
from migration_infra.images import ecr_repository_arn, repository_of
from migration_infra.runner_task import MigrationTask, fargate_task_definition
from migration_infra.settings import StackSettings

APP_CONTAINER = "app"


class AppService(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, *, cluster: pulumi.Input[str],
                 runner: MigrationTask, gate: pulumi.Resource,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("migration-runner:index:AppService", name, None, opts)
        app = settings.app
        if app is None:
            raise ValueError("AppService needs the `app` settings")
        child = pulumi.ResourceOptions(parent=self)
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        base = f"{settings.service}-{settings.environment}"

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/ecs/{base}/app",
            retention_in_days=settings.log_retention_days,
            opts=pulumi.ResourceOptions(parent=self, protect=True))
        app_repository = ecr_repository_arn(repository_of(app.image))
        # With the init container the app task also pulls the runner, reads its secret and
        # writes its log lines.
        runner_grants: list[pulumi.Input[Any]] = (
            [runner.repository_arn, runner.log_group.arn] if app.init_container else [None, None])
        self.execution_role = aws.iam.Role(
            f"{name}-execution", assume_role_policy=json.dumps(policies.assume_role_policy()),
            opts=child)
        self.execution_policy = aws.iam.RolePolicy(
            f"{name}-execution-policy", role=self.execution_role.id,
            policy=pulumi.Output.all(self.log_group.arn, *runner_grants).apply(
                lambda args: json.dumps(policies.execution_role_policy(
                    repository_arns=[arn for arn in (app_repository, args[1]) if arn],
                    secret_arns=sorted({app.db_secret_arn or "", *(
                        [settings.db_secret_arn or ""] if app.init_container else [])} - {""}),
                    kms_key_arns=([settings.db_secret_kms_key_arn]
                                  if settings.db_secret_kms_key_arn and (
                                      app.init_container
                                      or app.db_secret_arn == settings.db_secret_arn)
                                  else []),
                    log_group_arns=[arn for arn in (args[0], args[2]) if arn]))),
            opts=child)

        def containers(args: list[Any]) -> str:
            log_group, region_name, runner_definition = args
            defs = [app_container(
                APP_CONTAINER, app.image, app.container_port, log_group, region_name,
                environment=database_environment(settings.db_host, settings.db_port,
                                                 settings.db_name, settings.db_ssl_mode),
                db_secret_arn=app.db_secret_arn or "", health_path=app.health_check_path)]
            if app.init_container:
                defs = with_init_container(defs, runner_definition)
            return json.dumps(defs)

        self.task_definition = fargate_task_definition(
            f"{name}-task", family=f"{base}-app", cpu=app.cpu, memory=app.memory,
            architecture=settings.cpu_architecture, execution_role_arn=self.execution_role.arn,
            # The init container connects with the task's role under IAM database auth, and
            # snapshots the database with it.
            task_role_arn=(runner.task_role.arn if app.init_container and (
                settings.iam_auth or settings.snapshot != "off") else None),
            container_definitions=pulumi.Output.all(
                self.log_group.name, region, runner.container_definition).apply(containers),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.execution_policy]))
        self.service = aws.ecs.Service(
            f"{name}-service", name=f"{base}-app", cluster=cluster,
            task_definition=self.task_definition.arn, desired_count=app.desired_count,
            launch_type="FARGATE",
            platform_version="1.4.0",  # dependsOn conditions need 1.3.0 or later
            network_configuration={"subnets": list(settings.subnet_ids),
                                   "security_groups": [app.security_group_id],
                                   "assign_public_ip": settings.assign_public_ip},
            deployment_circuit_breaker={"enable": True, "rollback": True},
            wait_for_steady_state=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gate], protect=True))
        self.register_outputs({"service": self.service.name})
