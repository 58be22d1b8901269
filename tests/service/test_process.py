"""The guide's "container startup" option for real: the runner migrates, then uvicorn serves
the app as a process on 127.0.0.1; and a misconfigured service stops at once, with one line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx

from tests.support.helpers import PASSWORD, ROOT, run, runner_env, wait_until
from tests.support.service_helpers import service_env

HEAD = "ba8c60a76780"


def uvicorn(env: dict[str, str], sock: socket.socket | None = None) -> subprocess.Popen[str]:
    """``uvicorn src.main:app``, serving on ``sock`` (already bound: no race for a free port)."""
    where = ["--fd", str(sock.fileno())] if sock else ["--port", "9"]
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "src.main:app", *where],
        cwd=ROOT,
        env=env,
        pass_fds=(sock.fileno(),) if sock else (),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_runner_then_uvicorn_serves_a_healthy_app_on_the_migrated_database(database):
    env = runner_env(database)  # one environment for both (DATABASE_URL), as --then passes it
    # `migration-runner upgrade --then -- uvicorn src.main:app`, as two steps until --then lands
    migrated = run(env, "upgrade")
    assert migrated.code == 0, migrated.stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn(env, sock)
    try:

        def serving() -> bool:
            assert server.poll() is None, server.communicate()
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code > 0
            except httpx.TransportError:
                return False

        wait_until(serving, timeout=30, what="uvicorn to answer")
        health = httpx.get(f"{base}/healthz", timeout=5)
        assert (health.status_code, health.json()["status"]) == (200, "at_head")
        created = httpx.post(
            f"{base}/calls", json={"user_id": "u1", "phone_number": "+1"}, timeout=5
        )
        assert created.status_code == 201
        assert database.query("SELECT user_id, is_active FROM calls") == [("u1", True)]
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    # uvicorn shuts down gracefully (lifespan: the pool disposed), then re-raises the signal
    assert server.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete." in err
    assert PASSWORD not in out + err and "Traceback" not in out + err


def test_service_without_database_settings_exits_2_naming_the_variables():
    env = runner_env(None)
    server = uvicorn(env)
    out, err = server.communicate(timeout=60)
    assert server.returncode == 2, err
    assert err.strip().splitlines() == [
        "error: no database configured: missing DB_HOST, DB_NAME, DB_USER (the service reads "
        "DATABASE_URL, or DB_HOST, DB_NAME, DB_USER and DB_PASSWORD (or DB_SECRET), and "
        "optionally DB_PORT, DB_SSLMODE, DB_SSLROOTCERT)"
    ]


def test_service_with_a_bad_setting_names_it_and_never_the_password(database):
    env = service_env(database) | {
        "DB_SSLROOTCERT": "/nonexistent/global-bundle.pem",
        "DB_PORT": "99999",
    }
    server = uvicorn(env)
    out, err = server.communicate(timeout=60)
    assert server.returncode == 2
    assert "DB_PORT" in err and "DB_SSLROOTCERT" in err and "/nonexistent/global-bundle.pem" in err
    assert PASSWORD not in out + err and "Traceback" not in out + err
