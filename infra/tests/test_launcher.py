import shlex

from migration_infra.launcher import launcher_argv

ARGS = dict(cluster="prod", task_definition="svc-prod-migrate:7",
            subnets=["subnet-1", "subnet-2"], security_groups=["sg-1"], container="migrate",
            timeout=1800)


def test_the_gate_runs_the_runners_ecs_launcher_on_the_registered_revision():
    assert launcher_argv(launcher="migration-runner", **ARGS) == [
        "migration-runner", "ecs", "run", "--cluster", "prod",
        "--task-definition", "svc-prod-migrate:7", "--subnets", "subnet-1,subnet-2",
        "--security-groups", "sg-1", "--container", "migrate", "--timeout", "1800"]


def test_a_launcher_with_arguments_is_split_like_a_shell_would_and_quoted_back():
    argv = launcher_argv(launcher="uv run --project '/src/my runner' migration-runner",
                         assign_public_ip=True, **ARGS)
    assert argv[:5] == ["uv", "run", "--project", "/src/my runner", "migration-runner"]
    assert argv[-1] == "--assign-public-ip"
    assert shlex.split(shlex.join(argv)) == argv
