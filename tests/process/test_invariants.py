"""The invariant harness (issue 21): every command × every fault class, each run judged by one
checker (:func:`tests.support.invariants.violations`) against every promise in
docs/promises.md. Real runner processes, real PostgreSQL.

The main suite runs a sample: the cells named in :data:`ALWAYS` (each once broke) and
``INVARIANTS_SAMPLE`` (default 14) more drawn with ``INVARIANTS_SEED``. ``INVARIANTS_LONG=1``
runs every cell (``pytest -n 2 tests/process/test_invariants.py``: see docs/promises.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.lock.advisory import lock_key
from tests.support.helpers import (
    PASSWORD,
    Database,
    Project,
    command,
    new_database,
    runner_env,
    wait_until,
)
from tests.support.invariants import PRINTED, Observed, violations

CHAIN = ("a1", "a2")
LOCK = lock_key("alembic:public.alembic_version")
BOUND_S = 60  # no run may take longer: past it, the run "hung"


@dataclasses.dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    log_stream: str = "stderr"
    json_document: bool = False
    database: bool = True  # connects to the test database
    scripts: bool = True  # loads the revision files
    migrates: bool = False  # runs a revision under the lock
    at_head_first: bool = False  # starts from a database at head
    summary_event: str = "summary"


COMMANDS = {
    "upgrade": Command(("upgrade",), "stdout", migrates=True),
    "downgrade": Command(("downgrade", "a1"), "stdout", migrates=True, at_head_first=True),
    "stamp": Command(("stamp", "a1"), "stdout"),
    "upgrade --then": Command(("upgrade", "--then", "--", "true"), "stdout", migrates=True),
    "upgrade --dry-run": Command(("upgrade", "--dry-run", "--json"), json_document=True),
    "check": Command(("check", "--json"), json_document=True),
    "check --lint": Command(("check", "--lint", "--json"), json_document=True),
    "current": Command(("current", "--json"), json_document=True),
    "history": Command(("history", "--json"), json_document=True, at_head_first=True),
    "heads": Command(("heads", "--json"), json_document=True, database=False),
    "sql": Command(("sql",), database=False),
    "manifest": Command(("manifest", "--json"), json_document=True, database=False),
    "revision": Command(("revision", "-m", "next"), database=False),
    "verify": Command(("verify", "--json"), json_document=True),
    "lint": Command(("lint", "--json"), json_document=True, database=False),
    "ecs run": Command(
        (
            "ecs",
            "run",
            "--cluster",
            "c",
            "--task-definition",
            "td",
            "--subnets",
            "subnet-1",
            "--security-groups",
            "sg-1",
        ),
        database=False,
        scripts=False,
        summary_event="ecs.summary",
    ),
}
SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGPIPE")


def _applies(fault: str, cmd: Command) -> bool:
    phase = fault.partition("@")[2]
    if phase in ("import",) or fault in ("env.py syntax", "revision syntax", "revision prints"):
        return cmd.scripts
    if phase in ("revision", "lock wait") or fault in ("lock held", "backend terminated"):
        return cmd.migrates or (phase == "lock wait" and cmd.argv[0] == "stamp")
    if fault in ("read-only database", "permission denied"):
        return cmd.database
    if fault == "ledger row unfinished":
        return cmd.argv[0] in ("history", "current", "check", "upgrade")
    if fault.startswith("manifest dir"):
        return cmd.argv[0] == "manifest"
    if fault == "head -1":
        return cmd.log_stream == "stdout" or cmd.argv[0] in ("sql", "history")
    return True


FAULTS = (
    "none",
    "stdout closed",
    "reader gone",
    "head -1",
    *(f"{sig}@start" for sig in SIGNALS),
    *(f"{sig}@import" for sig in SIGNALS),
    *(f"{sig}@lock wait" for sig in ("SIGTERM", "SIGHUP")),
    *(f"{sig}@revision" for sig in SIGNALS),
    "lock held",
    "read-only database",
    "permission denied",
    "backend terminated",
    "env.py syntax",
    "revision syntax",
    "revision prints",
    "ledger row unfinished",
    "manifest dir missing",
    "manifest dir read-only",
)
CELLS = [(c, f) for c in COMMANDS for f in FAULTS if _applies(f, COMMANDS[c])]
#: cells that once broke (issue 21), always in the sample
ALWAYS = [
    ("upgrade", "SIGHUP@revision"),
    ("upgrade", "head -1"),
    ("current", "stdout closed"),
    ("current", "revision prints"),
    ("upgrade --then", "none"),
    ("history", "ledger row unfinished"),
    ("upgrade", "env.py syntax"),
    ("manifest", "manifest dir missing"),
    ("verify", "revision prints"),
    ("upgrade", "SIGPIPE@revision"),
]


def _sample() -> list[tuple[str, str]]:
    if os.environ.get("INVARIANTS_LONG"):
        return CELLS
    rng = random.Random(int(os.environ.get("INVARIANTS_SEED") or 21))
    rest = [cell for cell in CELLS if cell not in ALWAYS]
    return ALWAYS + rng.sample(rest, int(os.environ.get("INVARIANTS_SAMPLE") or 14))


# --- the project every cell runs -----------------------------------------------------------

A2 = """
import os, pathlib, time
if os.environ.get("FAULT_PRINT"):
    print("{printed}", os.environ.get("DATABASE_URL"))
if os.environ.get("FAULT_IMPORT_MARKER"):
    pathlib.Path(os.environ["FAULT_IMPORT_MARKER"]).touch()
    time.sleep(30)
"""
A2_BODY = """
if os.environ.get("FAULT_PRINT"):
    print("{printed} upgrade", os.environ.get("DATABASE_URL"))
if os.environ.get("FAULT_SCHEMA"):
    op.execute("CREATE TABLE locked.t_x (id int)")
op.execute("CREATE TABLE t_a2 (id int)")
if os.environ.get("FAULT_REV_MARKER"):
    pathlib.Path(os.environ["FAULT_REV_MARKER"]).touch()
    op.execute("SELECT pg_sleep(30)")
"""
A2_DOWN = """
op.execute("DROP TABLE t_a2")
if os.environ.get("FAULT_REV_MARKER"):
    pathlib.Path(os.environ["FAULT_REV_MARKER"]).touch()
    op.execute("SELECT pg_sleep(30)")
"""


def build_project(root: Path) -> Project:
    project = Project(root)
    project.revision("a1", None, "op.execute('CREATE TABLE t_a1 (id int)')")
    path = project.revision("a2", "a1", A2_BODY.format(printed=PRINTED), A2_DOWN)
    path.write_text(A2.format(printed=PRINTED) + path.read_text())
    return project


# --- running a cell ---------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    name: str
    cmd: Command
    fault: str
    project: Project
    db: Database
    scratch: Database
    tmp: Path
    env: dict[str, str] = dataclasses.field(default_factory=dict)


class Process:
    """A runner process whose output is collected while it runs."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, stdout_closed: bool):
        if stdout_closed:
            argv = ["sh", "-c", 'exec "$@" >&-', "sh", *argv]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=None if stdout_closed else subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.lines_read = threading.Event()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True)
        ]
        if not stdout_closed:
            self._readers.append(
                threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True)
            )
        for reader in self._readers:
            reader.start()

    def _pump(self, stream, into: list[bytes]) -> None:
        try:
            for line in stream:
                into.append(line)
                self.lines_read.set()
        except (OSError, ValueError):  # the test closed it
            pass

    def text(self) -> tuple[str, str]:
        return b"".join(self.out).decode(errors="replace"), b"".join(self.err).decode(
            errors="replace"
        )

    def close_stdout(self) -> None:
        self.proc.stdout.close()

    def wait(self) -> int | None:
        try:
            code = self.proc.wait(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        for reader in self._readers:
            reader.join(5)
        return code


def _catches(pid: int, sig: signal.Signals) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def run_cell(cell: Cell) -> Observed:
    env = runner_env(cell.db, cell.project, MIGRATION_LOCK_WAIT_TIMEOUT=45, **cell.env)
    if cell.cmd.argv[0] == "verify":
        env["MIGRATION_VERIFY_DATABASE_URL"] = cell.scratch.url()
    argv = list(cell.cmd.argv)
    if argv[0] == "verify":
        argv += ["--database-url", cell.scratch.url()]
    sig_name, _, phase = cell.fault.partition("@")
    with _arranged(cell, env):
        proc = Process(command(*argv), env, cell.project.root, cell.fault == "stdout closed")
        if cell.fault == "reader gone":
            proc.close_stdout()
        if cell.fault == "head -1":
            wait_until(lambda: proc.out or proc.proc.poll() is not None, BOUND_S, "a line")
            proc.close_stdout()
        if phase:
            _when(phase, proc, cell)
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.Signals[sig_name])
        if cell.fault == "backend terminated":
            _terminate_backend(cell, proc)
        code = proc.wait()
    stdout, stderr = proc.text()
    return Observed(
        command=cell.name,
        code=code,
        stdout=stdout,
        stderr=stderr,
        log_stream="stderr" if argv[0] == "ecs" else cell.cmd.log_stream,
        json_document=cell.cmd.json_document,
        stdout_lost=cell.fault in ("stdout closed", "reader gone", "head -1")
        or sig_name == "SIGPIPE",
        signal=sig_name if phase else None,
        chain=() if argv[0] == "stamp" else CHAIN,  # stamp sets the version, runs nothing
        summary_event=cell.cmd.summary_event,
    )


def _when(phase: str, proc: Process, cell: Cell) -> None:
    """Wait until the run is in ``phase``."""
    if phase == "start":
        wait_until(
            lambda: _catches(proc.proc.pid, signal.SIGTERM) or proc.proc.poll() is not None,
            BOUND_S,
            "the start",
        )
    elif phase in ("import", "revision"):
        marker = Path(cell.env[f"FAULT_{'IMPORT' if phase == 'import' else 'REV'}_MARKER"])
        wait_until(lambda: marker.exists() or proc.proc.poll() is not None, BOUND_S, phase)
    elif phase == "lock wait":
        wait_until(
            lambda: (
                any(b"lock.waiting" in line for line in proc.out + proc.err)
                or proc.proc.poll() is not None
            ),
            BOUND_S,
            "the lock wait",
        )


def _terminate_backend(cell: Cell, proc: Process) -> None:
    marker = Path(cell.env["FAULT_REV_MARKER"])
    wait_until(lambda: marker.exists() or proc.proc.poll() is not None, BOUND_S, "revision")
    with cell.db.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE '%pg_sleep(30)%' "
            "AND pid <> pg_backend_pid()"
        )


@contextlib.contextmanager
def _arranged(cell: Cell, env: dict[str, str]) -> Iterator[None]:
    """The fault's set-up (and its undoing): a lock held, a read-only database, ..."""
    fault = cell.fault
    if fault == "lock held":
        env["MIGRATION_LOCK_WAIT_TIMEOUT"] = "1"
    if fault in ("lock held",) or fault.endswith("@lock wait"):
        with cell.db.connect() as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
            yield
        return
    if fault == "read-only database":
        env["MIGRATION_DB_WAIT_TIMEOUT"] = "5"  # it waits for a failover to end: bounded
        with cell.db.admin() as admin:
            admin.execute(f'ALTER DATABASE "{cell.db.name}" SET default_transaction_read_only = on')
        try:
            yield
        finally:
            with psycopg.connect(cell.db.server.admin_conninfo, autocommit=True) as admin:
                admin.execute(
                    f'ALTER DATABASE "{cell.db.name}" RESET default_transaction_read_only'
                )
        return
    yield


def _prepare(cell: Cell) -> None:
    """The project's and the database's state before the faulted run; ``cell.env``: the
    fault's switches for the revisions."""
    fault, tmp = cell.fault, cell.tmp
    if cell.cmd.at_head_first or fault == "ledger row unfinished":
        ready = subprocess.run(
            command("upgrade"),
            env=runner_env(cell.db, cell.project),
            capture_output=True,
            timeout=BOUND_S,
            cwd=cell.project.root,
        )
        assert ready.returncode == 0, ready.stdout + ready.stderr
    phase = fault.partition("@")[2]
    if phase == "import":
        cell.env["FAULT_IMPORT_MARKER"] = str(tmp / "importing")
    if phase == "revision" or fault == "backend terminated":
        cell.env["FAULT_REV_MARKER"] = str(tmp / "in-revision")
    if fault == "revision prints":
        cell.env["FAULT_PRINT"] = "1"
    if fault == "permission denied":
        cell.env["FAULT_SCHEMA"] = "1"
        with cell.db.admin() as admin:
            admin.execute("CREATE SCHEMA locked")
    if fault == "env.py syntax":
        env_py = cell.project.root / "migrations" / "env.py"
        env_py.write_text(env_py.read_text() + "\ndef broken(:\n")
    if fault == "revision syntax":
        (cell.project.versions / "a3_step.py").write_text(
            "revision = 'a3'\ndown_revision = 'a2'\ndef upgrade(:\n"
        )
    if fault == "ledger row unfinished":
        with cell.db.admin() as admin:
            admin.execute(
                "ALTER TABLE migration_runner_ledger ALTER COLUMN finished_at DROP NOT NULL; "
                "UPDATE migration_runner_ledger SET finished_at = NULL"
            )
    if fault.startswith("manifest dir"):
        target = tmp / "out"
        if fault.endswith("read-only"):
            target.mkdir()
            target.chmod(0o555)
        cell.env["MIGRATION_MANIFEST"] = str(target / "manifest.json")
    if cell.cmd.argv[0] == "ecs":
        cell.env.update(
            AWS_ENDPOINT_URL="http://127.0.0.1:9",
            AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
            AWS_SECRET_ACCESS_KEY="not-a-secret-but-masked",
            AWS_DEFAULT_REGION="eu-west-1",
            AWS_MAX_ATTEMPTS="1",
        )


@pytest.fixture
def cell_of(database, server, tmp_path) -> Iterator[Callable[[str, str], Cell]]:
    with new_database(server) as scratch:

        def make(name: str, fault: str) -> Cell:
            cell = Cell(
                name,
                COMMANDS[name],
                fault,
                build_project(tmp_path / "p"),
                database,
                scratch,
                tmp_path,
            )
            _prepare(cell)
            return cell

        yield make
    (tmp_path / "out").exists() and (tmp_path / "out").chmod(0o755)


@pytest.mark.parametrize(("name", "fault"), _sample(), ids=lambda v: v.replace(" ", "_"))
def test_every_command_under_every_fault_keeps_the_promises(name, fault, cell_of):
    cell = cell_of(name, fault)
    observed = run_cell(cell)
    broken = violations(observed, cell.db if cell.cmd.database else None)
    assert not broken, (
        f"{name} × {fault}: {broken}\nexit {observed.code}\nstdout:\n{observed.stdout[-3000:]}"
        f"\nstderr:\n{observed.stderr[-3000:]}"
    )


def test_the_checker_catches_each_broken_promise():
    """Each promise the checker judges can fail: planted runs, one broken promise each."""
    summary = '{"event": "summary", "exit_code": %d, "_aws": {}}'
    error = '{"event": "error", "exit_code": 6, "message": "m", "error_code": "e"}'
    good = Observed("upgrade", 6, f"{error}\n{summary % 6}\n", "", "stdout")
    assert violations(good) == []
    planted = {
        "promise 1: the summary says": dataclasses.replace(good, code=0),
        "promise 1: no summary": dataclasses.replace(good, stdout=error + "\n"),
        "promise 1: the summary is not the last": dataclasses.replace(
            good, stdout=f'{error}\n{summary % 6}\n{{"event": "app.exec"}}\n'
        ),
        "promise 1: the summary has no EMF": dataclasses.replace(
            good, stdout=f'{error}\n{{"event": "summary", "exit_code": 6}}\n'
        ),
        "promise 2: stdout carries raw": dataclasses.replace(good, stdout="hi\n" + good.stdout),
        "promise 2: stdout is not one JSON": Observed(
            "current", 0, "x{}", summary % 0, "stderr", json_document=True
        ),
        "promise 3": dataclasses.replace(good, stderr=PASSWORD),
        "promise 4: an internal": dataclasses.replace(
            good, code=1, stdout=f"{error}\n{summary % 1}\n"
        ),
        "promise 4: a traceback": dataclasses.replace(good, stderr="Traceback (most recent"),
        "promise 5: SIGHUP ended": dataclasses.replace(good, signal="SIGHUP"),
        "hung": dataclasses.replace(good, code=None),
    }
    for expected, run in planted.items():
        assert any(v.startswith(expected) for v in violations(run)), (expected, violations(run))


# --- surprising environment values -----------------------------------------------------------

SETTINGS = (
    "MIGRATION_LOCK_WAIT_TIMEOUT",
    "MIGRATION_DB_WAIT_TIMEOUT",
    "MIGRATION_DDL_LOCK_TIMEOUT",
    "MIGRATION_CONNECT_TIMEOUT",
    "MIGRATION_VERSION_TABLE",
    "MIGRATION_LEDGER_TABLE",
    "DB_SSLMODE",
    "MIGRATION_LOG_LEVEL",
    "MIGRATION_LOG_FORMAT",
    "MIGRATION_TARGET",
    "MIGRATION_STATEMENT_TIMEOUT",
    "MIGRATION_MANIFEST",
    "ALEMBIC_CONFIG",
    "DB_PORT",
    "MIGRATION_LOCK_NAME",
)
VALUES = st.one_of(
    st.sampled_from(["", " ", "nan", "inf", "-1", "0", "1e309", "true", "[]", "{}", "\\", "%"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


@settings(
    max_examples=int(os.environ.get("INVARIANTS_ENV_EXAMPLES") or 4),
    deadline=None,
    derandomize=not os.environ.get("INVARIANTS_LONG"),
    suppress_health_check=list(HealthCheck),
)
@given(name=st.sampled_from(SETTINGS), value=VALUES, verb=st.sampled_from(["upgrade", "current"]))
def test_surprising_environment_values_keep_the_promises(name, value, verb, database, tmp_path):
    root = tmp_path / f"p{time.monotonic_ns()}"
    project = build_project(root)
    env = runner_env(database, project, MIGRATION_DB_WAIT_TIMEOUT=5)
    env[name] = value
    proc = Process(
        command(verb, "--json") if verb == "current" else command(verb), env, root, False
    )
    code = proc.wait()
    stdout, stderr = proc.text()
    observed = Observed(
        verb,
        code,
        stdout,
        stderr,
        "stdout" if verb == "upgrade" else "stderr",
        json_document=verb == "current",
        chain=CHAIN,
    )
    # another version table: alembic_version is not what the run reports on
    own_table = name in ("MIGRATION_VERSION_TABLE", "MIGRATION_LEDGER_TABLE")
    broken = violations(observed, None if own_table else database)
    assert not broken, (
        f"{name}={value!r}: {broken}\nexit {code}\n{stdout[-2000:]}\n{stderr[-2000:]}"
    )
