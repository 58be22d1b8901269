"""The image, built by ``.ci/build-image`` and run the way ECS runs it: a strictly read-only
root filesystem (no tmpfs at all), uid 10001, against a real PostgreSQL (``--network=host``).
The image is the slim one (issue 25): FROM scratch plus what ``image/rootfs.sh`` copies in, so
these tests also show that nothing the runner needs at run time was left out, and they hold
it to its size budget.

Skipped, saying why, on a machine without podman; ``.ci/steps/40-image.sh`` installs podman
and runs this module with ``MIGRATION_RUNNER_IMAGE_TESTS=required``, where a missing podman
is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner
from devtools.pgcluster import Cluster
from runner.errors import ExitCode
from runner.lock.advisory import lock_key
from tests.process.test_tls import make_ca, make_server_cert
from tests.support.helpers import PASSWORD, ROOT, Database, Project, Result, wait_until
from tests.support.urls import pg_url

SERVICE_HEAD = "ba8c60a76780"
# What ECS does with readonlyRootFilesystem and a fixed uid: nothing writable, no tmpfs.
RUN_AS_ECS = ["--read-only", "--read-only-tmpfs=false", "--user", "10001", "--network=host"]
# Fargate pulls every layer on every task start: the image as `podman save --format
# oci-archive` writes it (gzip-compressed layers, as a registry stores them), in bytes.
COMPRESSED_BUDGET = 50_000_000


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


def build(podman_env: dict[str, str], extras: str = "") -> str:
    """The image reference .ci/build-image prints (it serialises concurrent builds)."""
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-image")],
        env=dict(podman_env, EXTRAS=extras),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stderr[-5000:]}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str]) -> str:
    """The default image, built once per module."""
    return build(podman_env)


@pytest.fixture(scope="module")
def image_with_extras(podman_env: dict[str, str]) -> str:
    """The image with both optional extras (EXTRAS="aws lint": boto3, squawk)."""
    return build(podman_env, "aws lint")


class Container:
    """``podman run`` of the image, in the foreground, with a name to stop it by."""

    def __init__(
        self,
        podman_env: dict[str, str],
        image: str,
        db: Database | str,
        *args: str,
        options: tuple[str, ...] = (),
        **settings: str,
    ) -> None:
        """``db``: the database, or its URL as the container sees it."""
        self.name = f"mr-test-{uuid.uuid4().hex[:10]}"
        url = db if isinstance(db, str) else db.url()
        env = dict(podman_env, DATABASE_URL=url, MIGRATION_LOG_FORMAT="json", **settings)
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


def in_image(podman_env: dict[str, str], image: str, *argv: str) -> str:
    """stdout of ``argv`` run in the image as ECS runs it, without a database."""
    return subprocess.run(
        ["podman", "run", "--rm", *RUN_AS_ECS, "--entrypoint", argv[0], image, *argv[1:]],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


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

    current = Container(podman_env, image, database, "current", "--json").run()
    assert current.code == 0, current.stdout + current.stderr
    current.assert_clean()
    assert json.loads(current.stdout)["revision"] == [SERVICE_HEAD]


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
    # the image has no shell: the app is the one program it does have
    app = ("--then", "--", "python", "-c", "print('app-started'); raise SystemExit(5)")
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
    # the summary is the runner's last event: app.exec (the hand-over) comes before it
    assert [json.loads(line)["event"] for line in lines[-3:-1]] == ["app.exec", "summary"]
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
    facts = json.loads(in_image(podman_env, image, "python", "-c", LOOK_AROUND))
    assert facts == {
        "app": [".venv", "alembic", "alembic.ini", "migration-manifest.json", "src"],
        "programs": [],
        "site_packages": ["runner"],
        "importable": [],
        "present": ["/certs/global-bundle.pem", "/etc/ssl/certs/ca-certificates.crt"],
        "uid": 10001,
        "user": "runner",
    }


# What a look around the image finds, as one JSON document (the image has no shell).
LOOK_AROUND = """
import glob, importlib.util, json, os, pwd, shutil
PATH = "/app/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
programs = ["sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg", "perl", "uv", "pip",
            "pip3", "gcc", "ldconfig", "ldd"]
unwanted = ["runner", "devtools", "tests", "pytest", "_pytest", "pip", "setuptools"]
never_imported = ["pip", "setuptools", "ensurepip", "lib2to3", "idlelib", "tkinter", "sqlite3",
                  "distutils", "test"]
site = glob.glob("/app/.venv/lib/python3*/site-packages")[0]
present = ["/certs/global-bundle.pem", "/etc/ssl/certs/ca-certificates.crt", "/run/secrets/ca",
           "/usr/share/doc", "/usr/share/locale", "/usr/lib/locale", "/var/lib/dpkg",
           "/usr/share/perl5", "/usr/share/man"]
print(json.dumps({
    "app": sorted(os.listdir("/app")),
    "programs": [p for p in programs if shutil.which(p, path=PATH)],
    "site_packages": [name for name in unwanted if os.path.exists(os.path.join(site, name))],
    "importable": [name for name in never_imported if importlib.util.find_spec(name)],
    "present": [p for p in present if os.path.exists(p) and (os.path.isdir(p) or os.path.getsize(p))],
    "uid": os.getuid(),
    "user": pwd.getpwuid(os.getuid()).pw_name,
}))
"""


def test_the_compressed_image_is_within_its_budget(
    podman_env: dict[str, str], image: str, tmp_path: Path
) -> None:
    archive = tmp_path / "image.tar"
    subprocess.run(
        ["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(archive), image],
        env=podman_env,
        capture_output=True,
        check=True,
        timeout=300,
    )
    with tarfile.open(archive) as members:
        index = json.load(members.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(members.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    layers = [(layer["mediaType"], layer["size"]) for layer in manifest["layers"]]
    assert {kind for kind, _ in layers} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    size = archive.stat().st_size
    assert size <= COMPRESSED_BUDGET, (
        f"the image is {size / 1e6:.1f} MB compressed, over its {COMPRESSED_BUDGET / 1e6:.0f} MB "
        f"budget; layers (MB): {[round(n / 1e6, 2) for _, n in layers]}"
    )


def test_every_module_a_run_imports_comes_from_bytecode_compiled_at_build_time(
    podman_env: dict[str, str], image: str, database: Database
) -> None:
    """The root filesystem is read-only: a module whose bytecode is missing or stale is
    compiled again on every run, in every task (PYTHONVERBOSE says where each came from)."""
    for run in ("upgrade", "no-op"):
        result = Container(podman_env, image, database, "upgrade", PYTHONVERBOSE="1").run()
        assert result.code == 0, result.stdout[-3000:] + result.stderr[-3000:]
        loaded = [
            line.split("code object from ", 1)[1].strip("'")
            for line in result.stderr.splitlines()
            if "# code object from " in line
        ]
        assert len(loaded) > 100, result.stderr[-3000:]
        assert [path for path in loaded if not path.endswith(".pyc")] == [], run
    assert database.version() == [SERVICE_HEAD]


@pytest.fixture(scope="module")
def tls_server(template_cluster: Cluster) -> Iterator[tuple[Cluster, Path]]:
    """A cluster with ssl=on whose certificate (for localhost) a CA made here signed; the CA
    file in a directory uid 10001 can read."""
    certs = Path(tempfile.mkdtemp(prefix="mr-image-tls-"))
    certs.chmod(0o755)
    ca = make_ca(certs, "test-ca")
    ca.chmod(0o644)
    cluster = template_cluster.clone()
    try:
        for source in make_server_cert(certs, "test-ca"):
            target = cluster.root / source.name
            target.write_bytes(source.read_bytes())
            cluster._own(target)
            target.chmod(0o600)
        cluster.start(
            ssl="on",
            ssl_cert_file=str(cluster.root / "server.pem"),
            ssl_key_file=str(cluster.root / "server.key"),
        )
        yield cluster, ca
    finally:
        cluster.destroy()
        shutil.rmtree(certs)


def test_tls_verify_full_with_the_bundle_at_its_documented_path(
    podman_env: dict[str, str], image: str, tls_server: tuple[Cluster, Path]
) -> None:
    """DB_SSLROOTCERT=/certs/global-bundle.pem as in production, the host name resolved in the
    container: the test CA mounted over the bundle verifies the server; the image's own
    bundle (RDS's CAs, or the stand-in) does not, and that is fatal at once."""
    cluster, ca = tls_server
    url = pg_url(
        "postgres",
        PASSWORD,
        "localhost",
        cluster.port,
        "postgres",
        query="sslmode=verify-full&sslrootcert=/certs/global-bundle.pem",
    )
    mounted = ("--volume", f"{ca}:/certs/global-bundle.pem:ro")
    verified = Container(podman_env, image, url, "current", "--json", options=mounted).run()
    assert verified.code == 0, verified.stdout + verified.stderr
    verified.assert_clean()
    assert json.loads(verified.stdout)["revision"] == []

    rejected = Container(
        podman_env, image, url, "current", "--json", MIGRATION_DB_WAIT_TIMEOUT="30"
    ).run()
    assert rejected.code == ExitCode.REJECTED, rejected.stdout + rejected.stderr
    assert rejected.event("error")["error_kind"] == "ssl_config"
    assert rejected.elapsed < 15


def test_the_aws_and_lint_extras_work_in_the_image(
    podman_env: dict[str, str], image_with_extras: str, tls_server: tuple[Cluster, Path]
) -> None:
    """boto3 signs an IAM token that reaches the server over verify-full TLS (which rejects
    it: the server knows no IAM), never shown; squawk lints the service's migrations."""
    cluster, ca = tls_server
    iam = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_REGION": "eu-west-1",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_EC2_METADATA_DISABLED": "true",
        "MIGRATION_IAM_AUTH": "true",
        "MIGRATION_DB_WAIT_TIMEOUT": "0",
    }
    url = pg_url(
        "postgres",
        None,
        "localhost",
        cluster.port,
        "postgres",
        query="sslmode=verify-full&sslrootcert=/certs/global-bundle.pem",
    )
    mounted = ("--volume", f"{ca}:/certs/global-bundle.pem:ro")
    signed = Container(podman_env, image_with_extras, url, "current", options=mounted, **iam).run()
    assert signed.code == ExitCode.REJECTED, signed.stdout + signed.stderr
    assert signed.event("error")["error_kind"] == "bad_password", signed.stdout
    signed.assert_clean(iam["AWS_SECRET_ACCESS_KEY"], "X-Amz-Signature")

    linted = Container(
        podman_env, image_with_extras, url, "lint", options=("--tmpfs", "/tmp")
    ).run()
    assert linted.code == 0, linted.stdout + linted.stderr
    assert linted.summary["outcome"] == "passed"


def test_lint_runs_on_a_read_only_root_without_a_tmpfs(
    podman_env: dict[str, str], image_with_extras: str, database: Database
) -> None:
    linted = Container(podman_env, image_with_extras, database, "lint").run()
    assert linted.code == 0, linted.stdout + linted.stderr
