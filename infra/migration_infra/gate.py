"""The migration gate: `pulumi up` runs the migration task and stops if it fails.

A `command.local.Command` runs the runner's ECS launcher on the machine running `pulumi up`
(with its AWS credentials). The launcher exits with the container's exit code, so a failed
migration fails this resource, and `pulumi up` never reaches what depends on the gate: the app's
service update. The task's log lines, which the launcher streams, appear in Pulumi's output.

It runs on creation and again only when a trigger changes -- the image digest or the
migrations' heads -- or when its command changes (a new task definition revision); a plain
`pulumi up` with nothing new does not start a task, and `pulumi preview` never does.

With the stack's `phases`, the gate runs `upgrade --phase expand` and a second one,
`migration-contract`, runs `upgrade --phase contract` after the app's service is stable on the
new code (`program.deploy`), on the same triggers.
"""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from migration_infra.launcher import gate_command, launcher_argv

# Beyond the launcher's own --timeout: time for Fargate to place and start the task.
START_ALLOWANCE_S = 600


class MigrationGate(pulumi.ComponentResource):
    """Depend on this (`depends_on=[gate]`) to deploy only after the migrations succeeded.

    `runner_command` (e.g. `upgrade --phase contract`) replaces the task definition's command
    for this run; none: the task definition's own."""

    def __init__(self, name: str, *, launcher: str, cluster: pulumi.Input[str],
                 task_definition: pulumi.Input[str], container: str,
                 subnets: Sequence[str], security_groups: Sequence[pulumi.Input[str]],
                 image_digest: pulumi.Input[str], heads: Sequence[str], timeout: int,
                 assign_public_ip: bool = False,
                 identity: Sequence[tuple[str, str]] = (),
                 runner_command: Sequence[str] = (),
                 depends_on: Sequence[pulumi.Resource] = (),
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("migration-runner:index:MigrationGate", name, None, opts)
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        create = pulumi.Output.all(cluster, task_definition, *security_groups).apply(
            lambda args: gate_command(launcher_argv(
                launcher=launcher, cluster=args[0], task_definition=args[1],
                subnets=subnets, security_groups=args[2:], container=container,
                timeout=timeout, assign_public_ip=assign_public_ip,
                command=runner_command)))
        # Not the default: the whole previous log in PULUMI_COMMAND_STDOUT, past Linux's
        # 128 KiB limit for one environment string, would fail every run after a long one.
        self.triggers = [image_digest, ",".join(heads)]
        self.command = command.local.Command(
            f"{name}-run", create=create, triggers=self.triggers,
            # the stack's AWS identity, not only the machine's (`settings.launcher_identity`)
            environment={"AWS_REGION": region, **dict(identity)},
            add_previous_output_in_env=False,
            logging=command.local.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(depends_on),
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{timeout + START_ALLOWANCE_S}s",
                    update=f"{timeout + START_ALLOWANCE_S}s")))
        self.register_outputs({"stdout": self.command.stdout})
