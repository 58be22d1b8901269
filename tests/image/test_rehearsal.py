"""The deploy rehearsed end to end, on this machine, the way production runs it.

1. The Pulumi program, under its own mocks (``infra/tests/render.py``, in infra's environment),
   declares the migration task definition for this stack: the real image pinned by digest,
   the test database, the secret's ARN in moto.
2. That task definition is registered, as it is, in moto (server mode, on 127.0.0.1, in this
   process so that :class:`tests.ecs_agent.EcsAgent` can play the ECS agent).
3. The gate's own command line, as the program declared it, runs under ``/bin/sh -c`` as
   pulumi-command runs it: ``migration-runner ecs run ... --stop-with-parent & wait $!``.
4. The agent runs the task's container with podman as the task definition says (image,
   command, environment, secrets from moto's Secrets Manager, read-only root, uid 10001, stop
   timeout), ships its lines to moto's CloudWatch Logs and stops the task with the
   container's exit code. The database is a real PostgreSQL.

Then: the migration applied once, the launcher's exit code the container's, the logs streamed,
the summary's metrics what the program's alarm watches; ``--timeout`` and a SIGTERM of the
launcher both stop the container; the init-container form (``dependsOn SUCCESS``) and
``upgrade --then``.

Runs in its own step, ``.ci/steps/45-rehearsal.sh``, which sets
``MIGRATION_RUNNER_REHEARSAL=required`` (then a missing podman or infra environment is a
failure); elsewhere it is skipped, saying why (set ``MIGRATION_RUNNER_REHEARSAL=1`` to run it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.pgcluster import free_port
from runner.lock.advisory import lock_key
from tests.image.test_image import SERVICE_HEAD, image, podman_env  # noqa: F401 (fixtures)
from tests.support.aws import FAKE_ENV, World, fake_credentials, make_world
from tests.support.ecs_agent import EcsAgent, ecs_like_moto
from tests.support.helpers import ROOT, Database, wait_until

REGION = "eu-west-1"  # the mocks' region: the program's awslogs-region and the gate's AWS_REGION
ACCOUNT = "123456789012"
INFRA = ROOT / "infra"
INFRA_PYTHON = INFRA / ".venv" / "bin" / "python"
FAMILY = "maive-server-prod-migrate"
LOG_GROUP = "/ecs/maive-server-prod/migrations"


def _missing() -> str | None:
    if not os.environ.get("MIGRATION_RUNNER_REHEARSAL"):
        return (
            "the rehearsal runs in its own step, .ci/steps/45-rehearsal.sh "
            "(or set MIGRATION_RUNNER_REHEARSAL=1)"
        )
    if not shutil.which("podman"):
        why = "podman is not installed (.ci/steps/40-image.sh installs it)"
    elif not INFRA_PYTHON.exists():
        why = "infra's environment is missing (uv sync --locked --project infra)"
    else:
        return None
    if os.environ.get("MIGRATION_RUNNER_REHEARSAL") == "required":
        pytest.fail(why)
    return why


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in server mode on 127.0.0.1, in this process, behaving as ECS where the agent
    needs it to; this process's boto3 pointed at it."""
    from moto.moto_api import state_manager
    from moto.server import ThreadedMotoServer

    fake_credentials(monkeypatch)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    ecs_like_moto(monkeypatch)
    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": 1_000_000}
    )
    try:
        yield server
    finally:
        state_manager.unset_transition("ecs::task")
        urllib.request.urlopen(
            urllib.request.Request(  # a clean slate for the next test
                f"http://127.0.0.1:{port}/moto-api/reset", method="POST"
            ),
            timeout=10,
        ).read()
        server.stop()


def render(config: dict[str, Any]) -> dict[str, Any]:
    """The program's declarations under its mocks (infra's environment)."""
    proc = subprocess.run(
        [str(INFRA_PYTHON), "-m", "tests.render", json.dumps(config)],
        cwd=INFRA,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def registration(inputs: dict[str, Any]) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments from the program's TaskDefinition inputs."""
    keys = (
        "family",
        "networkMode",
        "requiresCompatibilities",
        "cpu",
        "memory",
        "executionRoleArn",
        "taskRoleArn",
        "runtimePlatform",
    )
    return {
        **{k: inputs[k] for k in keys if inputs.get(k)},
        "containerDefinitions": json.loads(inputs["containerDefinitions"]),
    }


class Stack:
    """The rehearsal's stack: the world in moto, the program's declarations, the agent."""

    def __init__(
        self, world: World, program: dict[str, Any], agent: EcsAgent, database: Database
    ) -> None:
        self.world, self.program, self.agent, self.database = world, program, agent, database
        self.revisions: dict[str, str] = {}
        for name, inputs in program["task_definitions"].items():
            registered = world.ecs.register_task_definition(**registration(inputs))
            td = registered["taskDefinition"]
            self.revisions[name] = f"{td['family']}:{td['revision']}"

    def gate_line(self, *extra: str) -> str:
        """The gate's `create`, as declared, on the revision moto registered (the mocks
        number every revision 7), with the launcher's pace made quick for a test."""
        line = self.program["gate"]["create"]
        declared = line.split("--task-definition ", 1)[1].split(" ", 1)[0]
        launcher = shlex.join([sys.executable, "-m", "runner"])
        line = line.replace(declared, self.revisions["migrations-task"])
        line = line.replace("migration-runner ecs run", f"{launcher} ecs run", 1)
        return line.replace(
            " & wait $!",
            " " + shlex.join(["--poll-interval", "0.2", "--drain", "10", *extra]) + " & wait $!",
        )

    def launch(self, line: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            **FAKE_ENV,
            "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
            "MIGRATION_LOG_FORMAT": "json",
            **self.program["gate"]["environment"],
        }
        env["AWS_DEFAULT_REGION"] = env["AWS_REGION"]
        return subprocess.Popen(
            ["/bin/sh", "-c", line],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


@pytest.fixture
def stack(
    moto: Any,
    image: str,  # noqa: F811
    podman_env: dict[str, str],  # noqa: F811
    database: Database,
) -> Iterator[Stack]:
    import boto3

    session = boto3.session.Session(region_name=REGION)
    world = make_world(session)
    for group in (LOG_GROUP, "/ecs/maive-server-prod/app"):
        session.client("logs").create_log_group(logGroupName=group)
    secret = session.client("secretsmanager").create_secret(
        Name="rds!db-rehearsal",
        SecretString=json.dumps(
            {"username": database.server.user, "password": database.server.password}
        ),
    )["ARN"]
    digest = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Digest}}", image],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
    )
    repository = image.rsplit(":", 1)[0]
    program = render(
        {
            "image": f"{repository}@{digest.stdout.strip()}",
            "clusterName": world_cluster(),
            "subnetIds": [world.subnet],
            "securityGroupId": world.security_group,
            "dbHost": database.server.host,
            "dbPort": database.server.port,
            "dbName": database.name,
            "dbSslMode": "disable",
            "dbSecretArn": secret,
            "stopTimeout": 10,
            "app": {"image": f"{repository}@{digest.stdout.strip()}", "initContainer": True},
        }
    )
    from moto.ecs.models import ecs_backends

    with EcsAgent(ecs_backends[ACCOUNT][REGION], session, world_cluster(), podman_env) as agent:
        yield Stack(world, program, agent, database)


def world_cluster() -> str:
    from tests.support.aws import CLUSTER

    return CLUSTER


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out, err


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def the(text: str, name: str) -> dict[str, Any]:
    found = [e for e in events(text) if e.get("event") == name]
    assert len(found) == 1, (name, text[-3000:])
    return found[0]


def extracted(document: dict[str, Any]) -> dict[tuple[str, str, tuple[Any, ...]], Any]:
    """The metrics CloudWatch extracts from an EMF document."""
    return {
        (d["Namespace"], m["Name"], tuple(sorted((n, document[n]) for n in dims))): document[
            m["Name"]
        ]
        for d in document["_aws"]["CloudWatchMetrics"]
        for dims in d["Dimensions"]
        for m in d["Metrics"]
    }


def test_the_gate_migrates_once_streams_the_logs_and_reports_what_the_alarm_watches(
    stack: Stack,
) -> None:
    started = time.monotonic()
    code, out, err = finish(stack.launch(stack.gate_line()))
    first_s = time.monotonic() - started

    assert code == 0, err[-3000:]
    summary = the(err, "ecs.summary")
    assert summary["container_exit_code"] == 0 and summary["exit_code"] == 0
    runner = [e for e in events(out)]
    assert runner[-1]["event"] == "summary" and runner[-1]["outcome"] == "migrated"
    assert runner[-1]["applied"] == [SERVICE_HEAD]
    assert summary["runner_summary"] == runner[-1]
    assert stack.database.version() == [SERVICE_HEAD]
    [ran] = stack.agent.ran
    assert ran.argv[ran.argv.index("--user") + 1] == "10001" and "--read-only" in ran.argv
    assert stack.database.server.password not in " ".join(ran.argv)
    assert stack.database.server.password not in out + err

    alarm = stack.program["alarm"]
    watched = (alarm["namespace"], alarm["metricName"], tuple(sorted(alarm["dimensions"].items())))
    assert extracted(runner[-1])[watched] == 0  # a success: Failures 0 under the alarm's metric

    code, out, _ = finish(stack.launch(stack.gate_line()))
    assert code == 0
    assert events(out)[-1]["outcome"] == "up_to_date"
    assert stack.database.version() == [SERVICE_HEAD]
    print(f"rehearsal: first gate run {first_s:.1f} s")


def test_a_failing_migration_fails_the_gate_with_the_containers_code_and_raises_the_alarm(
    stack: Stack,
) -> None:
    with stack.database.connect() as conn:  # a database ahead of the image's migrations
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('f00dfeedbeef')")

    code, out, err = finish(stack.launch(stack.gate_line()))

    assert code == 8, err[-3000:]
    assert the(err, "ecs.summary")["container_exit_code"] == 8
    runner_summary = events(out)[-1]
    alarm = stack.program["alarm"]
    watched = (alarm["namespace"], alarm["metricName"], tuple(sorted(alarm["dimensions"].items())))
    assert extracted(runner_summary)[watched] > alarm["threshold"]


def _hold_the_lock(database: Database) -> Any:
    holder = database.connect()
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("alembic:public.alembic_version"),))
    return holder


def test_a_timeout_stops_the_container_and_the_runner_rolls_back(stack: Stack) -> None:
    with _hold_the_lock(stack.database):
        code, out, err = finish(stack.launch(stack.gate_line("--timeout", "12")))
    assert code == 44, err[-3000:]
    assert the(err, "ecs.summary")["container_exit_code"] == 130
    assert events(out)[-1]["outcome"] == "interrupted"
    assert stack.agent.ran[0].stopped_by_agent and stack.agent.running_containers() == []
    assert stack.database.version() == []


def test_a_sigterm_of_the_launcher_stops_the_container(stack: Stack) -> None:
    with _hold_the_lock(stack.database):
        process = stack.launch(stack.gate_line())
        wait_until(
            lambda: stack.agent.ran and stack.agent.running_containers(),
            timeout=120,
            what="the container to run",
        )
        launcher = int(
            subprocess.run(
                ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
            ).stdout.split()[0]
        )
        os.kill(launcher, signal.SIGTERM)
        code, out, err = finish(process)
    assert code == 45, err[-3000:]
    assert the(err, "ecs.summary")["container_exit_code"] == 130
    assert stack.agent.running_containers() == []


def test_as_init_container_the_app_starts_only_after_the_migration_succeeded(stack: Stack) -> None:
    process = stack.launch(
        stack.gate_line().replace(stack.revisions["migrations-task"], stack.revisions["app-task"])
    )
    code, out, err = finish(process)
    assert code == 0, err[-3000:]
    migrate, app = stack.agent.ran
    assert (migrate.name, migrate.exit_code, app.name) == ("migrate", 0, "app")
    assert app.started >= migrate.started
    assert stack.database.version() == [SERVICE_HEAD]


def test_upgrade_then_execs_the_app_after_migrating(stack: Stack) -> None:
    code, out, err = finish(
        stack.launch(
            stack.gate_line("--command", "upgrade", "--then", "--", "migration-runner", "check")
        )
    )
    assert code == 0, err[-3000:]
    names = [e["event"] for e in events(out)]
    # the hand-over is said before the summary, which stays the runner's last event
    assert "app.exec" in names and names.index("app.exec") < names.index("summary")
    assert names[-1] == "summary"
    assert stack.database.version() == [SERVICE_HEAD]
