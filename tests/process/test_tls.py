"""TLS against a cluster with a CA of the test's own (openssl): a handshake cut by a
restarting server is transient (retried within the budget); a certificate that does not
verify is fatal at once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devtools.pgcluster import Cluster
from runner.errors import ExitCode
from tests.support.helpers import PASSWORD, Project, run, runner_env
from tests.support.tcpproxy import TcpProxy
from tests.support.urls import pg_url


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA in ``directory``: ``<name>.key``, ``<name>.pem``."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=directory,
    )
    return directory / f"{name}.pem"


def make_server_cert(directory: Path, ca: str) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
        cwd=directory,
    )
    return directory / "server.pem", directory / "server.key"


@pytest.fixture(scope="module")
def tls_cluster(
    template_cluster: Cluster, tmp_path_factory
) -> Iterator[tuple[Cluster, Path, Path]]:
    """A running cluster with ssl=on, its certificate signed by a CA made here; and a
    second CA that did not sign it."""
    certs = tmp_path_factory.mktemp("certs")
    ca = make_ca(certs, "test-ca")
    other = make_ca(certs, "other-ca")
    cluster = template_cluster.clone()
    cert, key = make_server_cert(certs, "test-ca")
    for source in (cert, key):
        target = cluster.root / source.name
        target.write_bytes(source.read_bytes())
        cluster._own(target)
        os.chmod(target, 0o600)
    cluster.start(
        ssl="on",
        ssl_cert_file=str(cluster.root / "server.pem"),
        ssl_key_file=str(cluster.root / "server.key"),
    )
    yield cluster, ca, other
    cluster.destroy()


def _project(tmp_path: Path) -> Project:
    project = Project(tmp_path / "project")
    project.revision("a1", None, "op.execute('CREATE TABLE IF NOT EXISTS t1 (id int)')")
    return project


def test_a_tls_handshake_cut_by_a_restarting_server_is_retried(tls_cluster, tmp_path):
    cluster, ca, _other = tls_cluster
    with TcpProxy(cluster.port) as proxy:
        proxy.cut_handshakes(2)
        url = pg_url(
            "postgres",
            PASSWORD,
            "127.0.0.1",
            proxy.port,
            "postgres",
            query=f"sslmode=verify-full&sslrootcert={ca}",
        )
        result = run(
            runner_env(None, _project(tmp_path), DATABASE_URL=url, MIGRATION_DB_WAIT_TIMEOUT=30)
        )
    result.check_log_contract()
    assert result.code == 0, result.stdout
    failed = [e for e in result.events if e["event"] == "db.connect_failed"]
    assert [e["error_kind"] for e in failed] == ["reset", "reset"], failed
    assert "eof" in failed[0]["error"].lower()
    with psycopg.connect(cluster.conninfo()) as conn:
        assert (
            conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            is not None
        )
    result.assert_clean()


def test_a_certificate_that_does_not_verify_is_fatal_at_once(tls_cluster, tmp_path):
    cluster, _ca, other = tls_cluster
    url = pg_url(
        "postgres",
        PASSWORD,
        "127.0.0.1",
        cluster.port,
        "postgres",
        query=f"sslmode=verify-full&sslrootcert={other}",
    )
    result = run(
        runner_env(None, _project(tmp_path), DATABASE_URL=url, MIGRATION_DB_WAIT_TIMEOUT=30)
    )
    result.check_log_contract()
    assert result.code == ExitCode.REJECTED, result.stdout
    assert result.event("error")["error_kind"] == "ssl_config"
    assert result.elapsed < 15


def _scratch_url(cluster: Cluster, root_cert: Path, name: str) -> str:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_url(
        "postgres",
        PASSWORD,
        "127.0.0.1",
        cluster.port,
        name,
        query=f"sslmode=verify-full&sslrootcert={root_cert}",
    )


def test_verify_connects_to_its_scratch_database_with_the_urls_sslmode_and_root_cert(
    tls_cluster, tmp_path
):
    cluster, ca, other = tls_cluster
    project = Project(tmp_path / "project")
    project.revision(
        "a1", None, "op.execute('CREATE TABLE t1 (id int)')", "op.execute('DROP TABLE t1')"
    )
    refused = run(
        runner_env(None, project),
        "verify",
        "--skip",
        "lint",
        "--database-url",
        _scratch_url(cluster, other, "verify_other_ca"),
    )
    assert refused.code == ExitCode.CONFIG, refused.stdout + refused.stderr
    assert "certificate verify failed" in refused.event("error")["message"]
    refused.assert_clean()
    verified = run(
        runner_env(None, project),
        "verify",
        "--skip",
        "lint",
        "--database-url",
        _scratch_url(cluster, ca, "verify_ca"),
        timeout=120,
    )
    assert verified.code == 0, verified.stdout + verified.stderr
    assert "verify passed: 1 revision(s) walked" in verified.stdout
