"""The image, built by ``.ci/build-image`` and run the way ECS runs it: a strictly read-only
root filesystem (no tmpfs at all), uid 10001, against a real PostgreSQL (``--network=host``).

Skipped, saying why, on a machine without podman; ``.ci/steps/40-image.sh`` installs podman
and runs this module with ``MIGRATION_RUNNER_IMAGE_TESTS=required``, where a missing podman
is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner
from runner.lock.advisory import lock_key
from tests.support.helpers import ROOT, Database, Project, Result, wait_until

SERVICE_HEAD = "ba8c60a76780"
# What ECS does with readonlyRootFilesystem and a fixed uid: nothing writable, no tmpfs.
RUN_AS_ECS = ["--read-only", "--read-only-tmpfs=false", "--user", "10001", "--network=host"]


def _podman_missing() -> str | None:
    if shutil.which("podman"):
        return None
    message = (
        "podman is not installed: the image tests need it "
        "(.ci/steps/40-image.sh installs it: apt-get install podman buildah debootstrap)"
    )
    if os.environ.get("MIGRATION_RUNNER_IMAGE_TESTS") == "required":
        pytest.fail(message)
    return message


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The environment podman runs with: the storage and configuration .ci/build-image uses."""
    missing = _podman_missing()
    if missing:
        pytest.skip(missing)
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-image"), "--print-env"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "MIGRATION_", "ALEMBIC_"))
    }
    env.update(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return env


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str]) -> str:
    """The image reference, built once per module (the script serialises concurrent builds)."""
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-image")],
        env=podman_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stderr[-5000:]}"
    return proc.stdout.strip().splitlines()[-1]


class Container:
    """``podman run`` of the image, in the foreground, with a name to stop it by."""

    def __init__(
        self,
        podman_env: dict[str, str],
        image: str,
        db: Database,
        *args: str,
        options: tuple[str, ...] = (),
        **settings: str,
    ) -> None:
        self.name = f"mr-test-{uuid.uuid4().hex[:10]}"
        env = dict(podman_env, DATABASE_URL=db.url(), MIGRATION_LOG_FORMAT="json", **settings)
        passed = [
            item
            for key in ("DATABASE_URL", "MIGRATION_LOG_FORMAT", *settings)
            for item in ("--env", key)
        ]  # values from podman's environment: not in argv
        self.argv = [
            "podman",
            "run",
            "--rm",
            "--name",
            self.name,
            *RUN_AS_ECS,
            *passed,
            *options,
            image,
            *args,
        ]
        self.env = env
        self.args = args or ("upgrade",)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Container:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._pumps = [
            threading.Thread(target=lambda: self._stdout.extend(self.proc.stdout)),  # type: ignore[union-attr]
            threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr)),
        ]  # type: ignore[union-attr]
        for pump in self._pumps:
            pump.start()
        return self

    def wait_for_event(self, name: str, timeout: float = 60) -> None:
        """Until the container logs event ``name`` (fails if it exits first)."""

        def logged() -> bool:
            assert self.proc is not None
            if any(f'"event": "{name}"' in line for line in list(self._stdout)):
                return True
            assert self.proc.poll() is None, f"exited without {name!r}:\n{''.join(self._stdout)}"
            return False

        wait_until(logged, timeout=timeout, what=f"the {name!r} event")

    def finish(self, timeout: float = 120) -> Result:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
            ended = time.monotonic()
            for pump in self._pumps:
                pump.join(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            subprocess.run(
                ["podman", "rm", "--force", "--ignore", self.name],
                env=self.env,
                capture_output=True,
            )
        return Result(
            self.proc.returncode,
            "".join(self._stdout),
            "".join(self._stderr),
            ended - self.started,
            "stdout" if self.args[0] in ("upgrade", "downgrade", "stamp") else "stderr",
        )

    def run(self, timeout: float = 120) -> Result:
        return self.start().finish(timeout)


@pytest.fixture
def shared_project() -> Iterator[Project]:
    """A throwaway Alembic project in a directory uid 10001 can read (bind-mounted read-only)."""
    root = Path(tempfile.mkdtemp(prefix="mr-image-"))
    root.chmod(0o755)
    try:
        yield Project(root / "project")
    finally:
        shutil.rmtree(root)


def test_upgrade_migrates_and_a_second_container_finds_nothing_to_do_without_the_lock(
    podman_env: dict[str, str], image: str, database: Database
) -> None:
    first = Container(podman_env, image, database, "upgrade").run()
    assert first.code == 0, first.stdout + first.stderr
    first.assert_clean()
    assert first.summary["outcome"] == "migrated"
    assert first.summary["applied"] == [SERVICE_HEAD]
    assert database.version() == [SERVICE_HEAD]

    second = Container(podman_env, image, database, "upgrade").run()
    assert second.code == 0, second.stdout + second.stderr
    assert second.summary["outcome"] == "up_to_date"
    assert second.event("upgrade.up_to_date")["locked"] is False
    assert not [e for e in second.events if e["event"] == "lock.acquired"]
    # the image's manifest is current: the no-op imports no revision file
    assert second.event("scripts.loaded")["source"] == "manifest"


def test_five_containers_at_once_apply_each_revision_exactly_once(
    podman_env: dict[str, str], image: str, database: Database, shared_project: Project
) -> None:
    revisions = [f"r{i}" for i in range(1, 6)]
    shared_project.audited_chain(revisions)
    mount = ("--volume", f"{shared_project.root}:/project:ro")
    herd = [
        Container(
            podman_env,
            image,
            database,
            "upgrade",
            options=mount,
            ALEMBIC_CONFIG="/project/alembic.ini",
        ).start()
        for _ in range(5)
    ]
    results = [c.finish() for c in herd]
    assert [r.code for r in results] == [0] * 5, "\n".join(r.stdout + r.stderr for r in results)
    applied = [rev for r in results for rev in r.summary["applied"]]
    assert sorted(applied) == revisions
    assert sorted(r[0] for r in database.query("SELECT rev FROM audit")) == revisions
    assert database.version() == ["r5"]


def test_check_json_prints_one_json_document_on_stdout(
    podman_env: dict[str, str], image: str, database: Database
) -> None:
    behind = Container(podman_env, image, database, "check", "--json").run()
    assert behind.code == 11, behind.stdout + behind.stderr
    document = json.loads(behind.stdout)
    assert document["status"] == "empty"
    assert document["pending"] == [SERVICE_HEAD]

    assert Container(podman_env, image, database, "upgrade").run().code == 0
    at_head = Container(podman_env, image, database, "check", "--json").run()
    assert at_head.code == 0, at_head.stdout + at_head.stderr
    assert json.loads(at_head.stdout)["status"] == "at_head"
    assert at_head.summary["outcome"] == "at_head"  # the log went to stderr


def test_podman_stop_while_waiting_for_the_lock_exits_130_within_5_s(
    podman_env: dict[str, str], image: str, database: Database
) -> None:
    with database.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("alembic:public.alembic_version"),))
        waiting = Container(podman_env, image, database, "upgrade").start()
        try:
            waiting.wait_for_event("lock.waiting")
            stopped = time.monotonic()
            subprocess.run(
                ["podman", "stop", "--time", "10", waiting.name],
                env=waiting.env,
                capture_output=True,
                check=True,
                timeout=30,
            )
        finally:
            result = waiting.finish(timeout=30)
        elapsed = time.monotonic() - stopped
    assert result.code == 130, result.stdout + result.stderr
    assert elapsed < 5, f"podman stop took {elapsed:.2f} s"
    assert result.summary["outcome"] == "interrupted"
    assert database.version() == []


def test_then_starts_the_app_only_after_a_successful_upgrade(
    podman_env: dict[str, str], image: str, database: Database
) -> None:
    app = ("--then", "--", "sh", "-c", "echo app-started; exit 5")
    with database.connect() as holder:  # a run that fails: the lock is taken, no wait allowed
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("alembic:public.alembic_version"),))
        failed = Container(
            podman_env, image, database, "upgrade", *app, MIGRATION_LOCK_WAIT_TIMEOUT="0"
        ).run()
    assert failed.code == 5, failed.stdout + failed.stderr
    assert "app-started" not in failed.stdout and database.version() == []

    started = Container(podman_env, image, database, "upgrade", *app).run()
    assert started.code == 5, started.stdout + started.stderr  # the app's exit code
    lines = started.stdout.splitlines()
    assert lines[-1] == "app-started"
    assert [json.loads(line)["event"] for line in lines[-3:-1]] == ["summary", "app.exec"]
    assert database.version() == [SERVICE_HEAD]


def test_the_image_holds_the_runner_and_the_migrations_only_and_runs_as_uid_10001(
    podman_env: dict[str, str], image: str
) -> None:
    config = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", image],
            env=podman_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["StopSignal"] == "SIGTERM"
    assert config["Config"]["Entrypoint"] == ["migration-runner"]
    labels = config["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == runner.__version__
    assert len(labels["org.opencontainers.image.revision"]) == 40
    listing = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            *RUN_AS_ECS,
            "--entrypoint",
            "sh",
            image,
            "-c",
            "ls -A /app; for tool in uv pip pip3 gcc; do command -v $tool; done; "
            "ls /app/.venv/lib/python3*/site-packages | grep -c -e '^runner$' -e '^devtools$' "
            "-e '^tests$' -e '^pytest' -e '^pip$' -e '^setuptools$' || true; "
            "test -s /certs/global-bundle.pem && echo bundle; test -e /run/secrets/ca && echo ca; exit 0",
        ],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listing == [
        ".venv",
        "alembic",
        "alembic.ini",
        "migration-manifest.json",
        "src",
        "1",
        "bundle",
    ]
