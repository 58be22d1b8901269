import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from migration_infra.launcher import gate_command, launcher_argv

ARGS = dict(cluster="prod", task_definition="svc-prod-migrate:7",
            subnets=["subnet-1", "subnet-2"], security_groups=["sg-1"], container="migrate",
            timeout=1800)


def test_the_gate_runs_the_runners_ecs_launcher_on_the_registered_revision():
    assert launcher_argv(launcher="migration-runner", **ARGS) == [
        "migration-runner", "ecs", "run", "--cluster", "prod",
        "--task-definition", "svc-prod-migrate:7", "--subnets", "subnet-1,subnet-2",
        "--security-groups", "sg-1", "--container", "migrate", "--timeout", "1800",
        "--stop-with-parent"]


def test_a_launcher_with_arguments_is_split_like_a_shell_would_and_quoted_back():
    argv = launcher_argv(launcher="uv run --project '/src/my runner' migration-runner",
                         assign_public_ip=True, **ARGS)
    assert argv[:5] == ["uv", "run", "--project", "/src/my runner", "migration-runner"]
    assert argv[-1] == "--assign-public-ip"
    assert shlex.split(shlex.join(argv)) == argv


FAKE_LAUNCHER = """
import os, sys, time
open(sys.argv[1] + ".env", "w").write(os.environ.get("MIGRATION_ECS_PARENT_PID", ""))
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[3]))
"""


def _fake(tmp_path, seconds, code):
    script = tmp_path / "launcher.py"
    script.write_text(FAKE_LAUNCHER)
    pid_file = tmp_path / "pid"
    return [sys.executable, str(script), str(pid_file), str(seconds), str(code)], pid_file


def test_the_shell_exits_with_the_launchers_exit_code(tmp_path):
    argv, _ = _fake(tmp_path, 0, 7)
    assert subprocess.run(["/bin/sh", "-c", gate_command(argv)]).returncode == 7


def test_the_launcher_is_told_the_shells_pid_to_watch(tmp_path):
    """Through `uv run` (which outlives the shell) the launcher's parent is uv: the shell's
    own pid is what `--stop-with-parent` must watch."""
    argv, pid_file = _fake(tmp_path, 0, 0)
    shell = subprocess.Popen(["/bin/sh", "-c", gate_command(argv)])
    assert shell.wait() == 0
    assert pid_file.with_name("pid.env").read_text() == str(shell.pid)


@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])  # bash execs a lone command
def test_the_launcher_outlives_a_sigkill_of_the_shell_pulumi_command_started(tmp_path, shell):
    """pulumi-command ends a cancelled command with SIGKILL to `/bin/sh -c <create>`."""
    argv, pid_file = _fake(tmp_path, 30, 0)
    shell = subprocess.Popen([shell, "-c", gate_command(argv)], start_new_session=True)
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the launcher did not start"
        time.sleep(0.02)
    launcher_pid = int(pid_file.read_text())
    try:
        assert launcher_pid != shell.pid  # not exec'd into the shell
        shell.kill()
        shell.wait()
        os.kill(launcher_pid, 0)  # still there, to see its parent gone and stop the task
    finally:
        os.killpg(shell.pid, signal.SIGKILL)


def test_a_command_for_the_container_comes_last_after_command():
    """The launcher takes every word after `--command` as the container's command."""
    argv = launcher_argv(launcher="migration-runner", assign_public_ip=True,
                         command=("upgrade", "--phase", "expand"), **ARGS)
    assert argv[argv.index("--command"):] == ["--command", "upgrade", "--phase", "expand"]
    assert "--assign-public-ip" in argv[:argv.index("--command")]


def test_without_a_command_the_task_definitions_own_runs():
    assert "--command" not in launcher_argv(launcher="migration-runner", **ARGS)
