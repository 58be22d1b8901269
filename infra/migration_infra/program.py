"""The whole deploy, in order: the runner's task, the gate that runs it, the app behind it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from migration_infra.app import AppService
from migration_infra.gate import MigrationGate
from migration_infra.heads import migration_heads
from migration_infra.runner_task import MigrationTask, image_repository, runner_command
from migration_infra.settings import StackSettings


@dataclass
class Deployment:
    """What `deploy` declared; before the first image exists, only the repository."""

    repository: aws.ecr.Repository | None
    task: MigrationTask | None = None
    gate: MigrationGate | None = None
    app: AppService | None = None
    contract_gate: MigrationGate | None = None
    cluster: pulumi.Output[str] | None = None


def deploy(settings: StackSettings, program_dir: Path | None = None) -> Deployment:
    """Declare every resource and export the outputs an operator needs.

    With `repositoryOnly` (the first `up`, before any image exists) only the repository is
    declared, so CI has somewhere to push. Settings without an image are refused earlier
    (`parse_settings`): a program that declared less would make `pulumi up` delete the rest.
    What a deploy must never delete (cluster, repository, log groups, the app's service) is
    `protect`ed: a `pulumi up` that would delete it fails instead.

    `migrationsDir` is relative to `program_dir` (default: this program's directory), so the
    heads are read from the checkout `pulumi up` runs in. Raises `HeadsError` if it is missing.
    """
    program_dir = program_dir or Path(__file__).resolve().parent.parent
    repository = (image_repository("migration-runner-images", settings.repository_name)
                  if settings.creates_repository else None)
    if repository is not None:
        pulumi.export("repositoryUrl", repository.repository_url)
        if settings.repository_only:
            pulumi.log.warn("migration-runner:repositoryOnly: created the image repository "
                            "only. Push the image to it, remove repositoryOnly and run "
                            "`pulumi up` with --config migration-runner:imageDigest=sha256:...")
            return Deployment(repository=repository)
    heads = migration_heads(program_dir / settings.migrations_dir)
    if settings.cluster_name:
        cluster = pulumi.Output.from_input(settings.cluster_name)
    else:
        cluster = aws.ecs.Cluster(f"{settings.service}-{settings.environment}",
                                  opts=pulumi.ResourceOptions(protect=True)).name

    task = MigrationTask("migrations", settings, repository=repository)

    def migration_gate(name: str, phase: str | None,
                       depends_on: list[pulumi.Resource]) -> MigrationGate:
        return MigrationGate(
            name, launcher=settings.launcher, cluster=cluster,
            task_definition=task.task_definition_ref, container=task.container_name,
            subnets=settings.subnet_ids, security_groups=[task.security_group_id],
            assign_public_ip=settings.assign_public_ip, image_digest=task.image_digest,
            identity=settings.launcher_identity, heads=heads, timeout=settings.task_timeout,
            runner_command=runner_command(settings, phase) if phase else (),
            depends_on=[task.task_definition, *task.network_rules, *depends_on])

    # With `phases`: expand here, contract once the service is stable (`wait_for_steady_state`).
    gate = migration_gate("migration-gate", "expand" if settings.phases else None, [])
    app = (AppService("app", settings, cluster=cluster, runner=task, gate=gate)
           if settings.app else None)
    contract_gate = (migration_gate("migration-contract", "contract", [gate, app.service])
                     if settings.phases and app is not None else None)

    pulumi.export("image", task.image_uri)
    pulumi.export("imageDigest", task.image_digest)
    pulumi.export("migrationsHeads", list(heads))
    pulumi.export("taskDefinition", task.task_definition_ref)
    pulumi.export("logGroup", task.log_group.name)
    pulumi.export("cluster", cluster)
    pulumi.export("alarm", task.alarm.name)
    if app is not None:
        pulumi.export("appService", app.service.name)
        pulumi.export("appImage", settings.app.image)
    return Deployment(repository=repository, task=task, gate=gate, app=app, cluster=cluster,
                      contract_gate=contract_gate)
