"""Test helpers: servers and databases, throwaway Alembic projects, runner processes."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from devtools.projects import ENV_PY, Project, age_files  # noqa: F401  (the tests import them from here)
from tests.support.urls import pg_url

# Special characters on purpose: URL-encoding, conninfo quoting and redaction must all cope.
PASSWORD = "s3cr@t:/%#?pw"
ROOT = Path(__file__).resolve().parents[2]
PYCACHE = os.path.join(tempfile.gettempdir(), f"migration-runner-test-pycache-{os.getuid()}")


@dataclasses.dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    admin_conninfo: str


@dataclasses.dataclass(frozen=True)
class Database:
    server: Server
    name: str

    def url(self, password: str | None = None, name: str | None = None) -> str:
        secret = self.server.password if password is None else password
        return pg_url(
            self.server.user, secret, self.server.host, self.server.port, name or self.name
        )

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            password=self.server.password,
            dbname=self.name,
            autocommit=True,
            **kw,
        )

    def admin(self) -> psycopg.Connection[Any]:
        """The superuser on this database: for arranging what the tests' role may not do."""
        return psycopg.connect(self.server.admin_conninfo, dbname=self.name, autocommit=True)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return list(conn.execute(sql, params).fetchall())

    def version(self) -> list[str]:
        exists = self.query("SELECT to_regclass('alembic_version') IS NOT NULL")[0][0]
        return (
            sorted(r[0] for r in self.query("SELECT version_num FROM alembic_version"))
            if exists
            else []
        )

    def advisory_locks(self) -> int:
        return self.query(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
            "database = (SELECT oid FROM pg_database WHERE datname = %s)",
            (self.name,),
        )[0][0]

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0])


@contextmanager
def new_database(server: Server, template: Database | None = None) -> Iterator[Database]:
    """A new database (a copy of ``template`` if given), dropped afterwards."""
    name = f"s_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template.name}"' if template else ""
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy} OWNER "{server.user}"')
    try:
        yield Database(server, name)
    finally:
        with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


WRITING = ("upgrade", "downgrade", "stamp")


@dataclasses.dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    elapsed: float
    #: where the JSON log lines are: stdout for writing commands, stderr for the others
    log_stream: str = "stdout"

    @property
    def log(self) -> str:
        return self.stdout if self.log_stream == "stdout" else self.stderr

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.splitlines() if line.startswith("{")]

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == name]
        assert len(found) == 1, f"expected one {name!r} event, got {len(found)}:\n{self.stdout}"
        return found[0]

    @property
    def summary(self) -> dict[str, Any]:
        return self.event("summary")

    def assert_clean(self, *secrets: str) -> None:
        """No secret anywhere in the output, no traceback, every stdout line a JSON event."""
        everything = self.stdout + self.stderr
        for secret in (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), *secrets):
            assert secret not in everything, f"secret leaked in output:\n{everything}"
        assert "Traceback" not in everything, everything
        for line in self.log.splitlines():
            json.loads(line)

    def check_log_contract(self, *, traceback_allowed: bool = False) -> list[dict[str, Any]]:
        """The log contract of every run that was not SIGKILLed: every log line a JSON
        event; one ``summary``, last, whose exit_code is the process's; a failed run logs
        exactly one ``error`` event (level error, its exit code, a message and an
        error_code) just before it, a successful one none. Returns the events."""
        everything = f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        if not traceback_allowed:
            assert "Traceback" not in self.stdout + self.stderr, everything
        events = [json.loads(line) for line in self.log.splitlines() if line.strip()]
        names = [e["event"] for e in events]
        assert names and names[-1] == "summary", (
            f"the log does not end with a summary: {everything}"
        )
        assert names.count("summary") == 1, f"several summaries: {everything}"
        assert events[-1]["exit_code"] == self.code, f"summary exit_code != exit code: {everything}"
        if self.code != 0:
            assert len(events) >= 2 and names[-2] == "error", (
                f"no error event before the summary: {everything}"
            )
            error = events[-2]
            assert error["level"] == "error" and error["exit_code"] == self.code, everything
            assert error.get("message") and error.get("error_code"), everything
            assert names.count("error") == 1, f"several error events: {everything}"
        else:
            assert "error" not in names, everything
        return events


def runner_env(
    db: Database | None, project: Project | None = None, **settings: Any
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "MIGRATION_", "ALEMBIC_", "TEST_DATABASE"))
    }
    env["MIGRATION_LOG_FORMAT"] = "json"
    # this machine sets PYTHONDONTWRITEBYTECODE: every runner process would compile Alembic,
    # SQLAlchemy and pydantic from source (~1.5 s); cache bytecode outside the tree instead
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", PYCACHE)
    if db is not None:
        env["DATABASE_URL"] = db.url()
    if project is not None:
        env["ALEMBIC_CONFIG"] = str(project.ini)
    env.update({k: str(v) for k, v in settings.items()})
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def run(env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None) -> Result:
    args = args or ("upgrade",)
    started = time.monotonic()
    proc = subprocess.run(
        command(*args), env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT
    )
    return Result(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        time.monotonic() - started,
        "stdout" if args[0] in WRITING else "stderr",
    )


class Running:
    """A runner process whose stdout events can be awaited while it runs."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            command(*(args or ("upgrade",))),
            env=env,
            cwd=cwd or ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(
            target=lambda: self._err.append(self.proc.stderr.read()), daemon=True
        ).start()  # type: ignore[union-attr]

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_event(self, name: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {name!r} event within {timeout} s:\n{''.join(self.lines)}"
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"exited without a {name!r} event:\n{''.join(self.lines)}"
            self.lines.append(line)
            event = json.loads(line)
            if event["event"] == name:
                return event

    def signal(self, sig: signal.Signals) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def finish(self, timeout: float = 60) -> Result:
        self.proc.wait(timeout=timeout)
        ended = time.monotonic()
        while True:
            line = self._queue.get(timeout=10)
            if line is None:
                break
            self.lines.append(line)
        deadline = time.monotonic() + 10
        while not self._err and time.monotonic() < deadline:
            time.sleep(0.01)
        return Result(
            self.proc.returncode, "".join(self.lines), "".join(self._err), ended - self.started
        )


def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (a bound, not a hope)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
