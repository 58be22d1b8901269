"""The command line the gate runs: the runner's ECS launcher (`migration-runner ecs run`),
which starts the task, streams its log lines and exits with the container's exit code."""

from __future__ import annotations

import shlex
from typing import Sequence


def launcher_argv(*, launcher: str, cluster: str, task_definition: str,
                  subnets: Sequence[str], security_groups: Sequence[str], container: str,
                  timeout: int, assign_public_ip: bool = False,
                  command: Sequence[str] = ()) -> list[str]:
    """`launcher` is the command that runs the runner's CLI (e.g. `migration-runner`, or
    `uv run --project .. --extra aws migration-runner`), split like a shell would.
    `--stop-with-parent`: the launcher stops the task when the shell that started it is gone
    (see `gate_command`). `command` (e.g. `upgrade --phase expand`), when given, replaces the
    container's command: `--command` and its words come last, because the launcher takes
    everything after `--command` as the container's command."""
    argv = [*shlex.split(launcher), "ecs", "run",
            "--cluster", cluster,
            "--task-definition", task_definition,
            "--subnets", ",".join(subnets),
            "--security-groups", ",".join(security_groups),
            "--container", container,
            "--timeout", str(timeout),
            "--stop-with-parent"]
    if assign_public_ip:
        argv.append("--assign-public-ip")
    if command:
        argv += ["--command", *command]
    return argv


def gate_command(argv: Sequence[str]) -> str:
    """The shell line pulumi-command runs (`/bin/sh -c`). A cancelled `pulumi up` SIGKILLs
    that shell; run as the shell's only command the launcher would be the shell (sh execs
    it) and die without stopping the task. Started in the background and waited for, it
    outlives the shell, sees it gone (`--stop-with-parent`) and stops the task; otherwise the
    shell exits with the launcher's exit code. The shell's pid (`$$`) goes along as
    `MIGRATION_ECS_PARENT_PID`: through a wrapper that outlives the shell (`uv run` waits for
    its child), the launcher's parent is the wrapper, which never goes, and the shell's exit
    is what it must watch."""
    return f"MIGRATION_ECS_PARENT_PID=$$ {shlex.join(argv)} & wait $!"
