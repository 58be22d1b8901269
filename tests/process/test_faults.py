"""A fault matrix that proves nothing is lost.

The full runner runs as a process against real PostgreSQL; each test injects a fault (SIGKILL
or SIGTERM at random points, PostgreSQL stopped mid-run, the TCP connection cut or
black-holed, the database refusing connections, a revision raising, a revision hitting
``temp_file_limit``; and the kinds of issue 10: a revision calling ``sys.exit`` or raising
``KeyboardInterrupt``, SIGTERM to a revision busy in Python, the lock session terminated
while env.py migrates on its own connection, the version table locked by another session,
connections refused after the first) and then checks the same invariants:

(a) the database is at a revision the scripts contain, or at base;
(b) every applied revision is complete and none is half applied: each revision ``r`` of the
    test chain creates ``t_<r>``, inserts ``audit(rev='r')`` and adds ``audit.c_<r>``, in one
    revision, so for the set R of revisions implied by ``alembic_version`` exactly the
    ``t_<r>`` (r in R) exist, ``audit`` has exactly one row per r in R and exactly the
    columns ``c_<r>`` (r in R);
(c) ``alembic_version`` agrees with the schema (checked in the same snapshot as (b));
(d) the migration lock is free (no advisory lock in the test database), waited for with a
    bound: after a SIGKILL or a lost network the server needs a moment to notice;
(e) the next run, with normal settings, exits 0 at head, and (a)-(c) hold after it; it
    applies exactly the revisions the fault left pending;
(f) the faulted run's log (unless the process was SIGKILLed) is JSON lines ending with one
    ``summary`` whose ``exit_code`` is the process's, preceded by an ``error`` event when it
    failed; no password and no traceback on stdout or stderr.

The faults are keyed on the runner's own events (``db.connected``, ``lock.acquired``,
``revision.started`` / ``revision.applied`` of a random revision, ...) plus a random
0-300 ms, and the revisions sleep between their statements while a fault is being injected
(``FAULT_STEP_S``), so faults land between and inside statements. Whatever the revisions do
beyond their normal effect is switched on by ``FAULT_AT_<REV>`` in the faulted run's
environment only, so the next run uses the same scripts with normal settings.

(b) and (c) also cover the runner's own ledger table when it has one: one ``applied`` row
per revision in R, none for any other.

Runner bugs this matrix found are pinned by name (``KILLED_AFTER_SUMMARY``,
``LOST_AS_INTERNAL``, ``TERM_AS_INTERNAL``): the tests fail if any comes back.

Seeds: ``FAULTS_SEED`` (default: fixed in CI, else one per session, printed by every test) and
``FAULTS_KILL_SEEDS`` / ``FAULTS_TERM_SEEDS`` / ``FAULTS_CUT_SEEDS`` (how many faults).
``FAULTS_BLACKHOLE_S`` (default 6) is how long the black-hole test keeps the connection
silent before cutting it. Each test prints its counts and timings:
``pytest -rP tests/process/test_faults.py`` shows them (they are also ``record_property`` values).
The random matrices count their invariant violations (:class:`Invariants`) and fail after
reporting them; a single-fault test fails at its first violated invariant, before reporting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from devtools.pgcluster import free_port
from runner.errors import ExitCode
from runner.lock.advisory import lock_key
from tests.support.helpers import (
    ENV_PY,
    PASSWORD,
    Database,
    Project,
    Result,
    Running,
    Server,
    run,
    runner_env,
)
from tests.support.tcpproxy import TcpProxy
from tests.support.urls import pg_url

REVS = ["r1", "r2", "r3", "r4", "r5"]
STEP_S = 0.12  # each of the two pauses inside a revision while faults are injected
LOCK = lock_key("alembic:public.alembic_version")


def _seed() -> int:
    """FAULTS_SEED; in CI a fixed one (a merge should not hinge on a new draw); otherwise one
    per test session (shared by the xdist workers), to keep exploring. Printed by each test."""
    if os.environ.get("FAULTS_SEED"):
        return int(os.environ["FAULTS_SEED"])
    if os.environ.get("CI"):
        return 934591
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        return int(hashlib.sha256(run_id.encode()).hexdigest(), 16) % 10**6
    return random.SystemRandom().randrange(10**6)


SEED = _seed()


def _count(name: str, default: int) -> int:
    return max(1, int(os.environ.get(name) or default))


# --- the test revisions ------------------------------------------------------------------


def _revision_body(rev: str, first: bool) -> str:
    """create t_<rev>, pause, audit row, [fault], pause, audit.c_<rev>: one revision."""
    lines = [
        "import os",
        "step = float(os.environ.get('FAULT_STEP_S') or 0)",
        f"fault = os.environ.get('FAULT_AT_{rev.upper()}', '')",
    ]
    if first:
        lines.append('op.execute("CREATE TABLE audit (rev text NOT NULL)")')
    lines += [
        f'op.execute("CREATE TABLE t_{rev} (id int)")',
        "if step:",
        "    op.execute(f'SELECT pg_sleep({step})')",
        f"op.execute(\"INSERT INTO audit (rev) VALUES ('{rev}')\")",
        "if fault == 'raise':",
        f"    raise RuntimeError('planted failure in {rev}')",
        "if fault == 'sqlerror':",
        "    op.execute('SELECT 1/0')",
        "if fault == 'tempfile':  # under temp_file_limit = 1MB, set by the test",
        "    op.execute('SELECT g FROM generate_series(1, 2000000) g ORDER BY random() '",
        "               'OFFSET 1999999')",
        "if fault == 'exit':",  # a revision that ends the process itself
        "    import sys; sys.exit(0)",
        "if fault == 'keyboard':",
        "    raise KeyboardInterrupt",
        "if fault == 'spin':",  # busy in Python: no statement for a cancel to stop
        "    while True: pass",
        "if fault.startswith('hold='):",
        "    op.execute(f'SELECT pg_sleep({float(fault[5:])})')",
        "if step:",
        "    op.execute(f'SELECT pg_sleep({step})')",
        f'op.execute("ALTER TABLE audit ADD COLUMN c_{rev} int")',
    ]
    return "\n".join(lines)


def write_chain(project: Project, revs: list[str] = REVS) -> None:
    down = None
    for index, rev in enumerate(revs):
        project.revision(rev, down, _revision_body(rev, first=index == 0))
        down = rev


_PYCACHE: list[str] = []


def env_for(db: Database | None, project: Project, **settings: Any) -> dict[str, str]:
    """The runner's environment. Its bytecode is cached in a directory of this session's
    (the environment may forbid writing it, which costs each runner process ~1.5 s of
    compiling on this machine); the test revisions are never rewritten, so nothing stale."""
    env = runner_env(db, project, **settings)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if _PYCACHE:
        env["PYTHONPYCACHEPREFIX"] = _PYCACHE[0]
    return env


@pytest.fixture(scope="module", autouse=True)
def _bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _PYCACHE[:] = [str(tmp_path_factory.mktemp("pycache"))]
    yield
    _PYCACHE.clear()


# --- invariants --------------------------------------------------------------------------


@dataclasses.dataclass
class State:
    version: list[str]
    applied: list[str]  # R: the revisions alembic_version implies, in order


LEDGER = "migration_runner_ledger"  # the runner's audit ledger, when it has one


def check_schema(db: Database, context: str, revs: list[str] = REVS) -> State:
    """(a), (b), (c) in one REPEATABLE READ snapshot (a commit landing mid-check cannot
    make a consistent database look torn). The test owns ``audit`` and ``t_*``; other tables
    (``alembic_version``, the runner's ledger) are the runner's, and its ledger, if there is
    one, must agree too: one ``applied`` (or ``adopted``) row per revision in R, no other."""
    with db.connect(options="-c lock_timeout=10s -c statement_timeout=20s") as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            )
        }
        version = (
            sorted(v for (v,) in conn.execute("SELECT version_num FROM alembic_version"))
            if "alembic_version" in tables
            else []
        )
        audit_rows: Counter[str] = Counter()
        audit_columns: set[str] = set()
        if "audit" in tables:
            audit_rows = Counter(r for (r,) in conn.execute("SELECT rev FROM audit"))
            audit_columns = {
                c
                for (c,) in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'public.audit'::regclass "
                    "AND attnum > 0 AND NOT attisdropped"
                )
            }
        ledger = None
        if LEDGER in tables:
            ledger = Counter(
                (r, o) for (r, o) in conn.execute(f"SELECT revision, outcome FROM {LEDGER}")
            )
        conn.execute("COMMIT")
    ours = {t for t in tables if t == "audit" or t.startswith("t_")}
    where = (
        f"{context}: version={version} tables={sorted(tables)} audit={dict(audit_rows)} "
        f"columns={sorted(audit_columns)} ledger={dict(ledger) if ledger is not None else '-'}"
    )
    # (a) at a revision the scripts contain (a linear chain: one row at most), or at base
    assert len(version) <= 1, f"several heads in a linear chain: {where}"
    assert all(v in revs for v in version), f"unknown revision: {where}"
    applied = revs[: revs.index(version[0]) + 1] if version else []
    # (b) + (c): exactly the effects of the revisions in R, each once, nothing else
    expected = {f"t_{r}" for r in applied} | ({"audit"} if applied else set())
    assert ours == expected, f"tables disagree with the version: {where}"
    assert not applied or "alembic_version" in tables, where
    assert audit_rows == Counter(applied), f"audit rows disagree with the version: {where}"
    if applied:
        assert audit_columns == {"rev"} | {f"c_{r}" for r in applied}, (
            f"audit columns disagree with the version (half-applied revision?): {where}"
        )
    if ledger is not None:
        assert set(o for (_r, o) in ledger) <= {"applied", "adopted"}, where
        assert Counter(r for (r, _o) in ledger.elements()) == Counter(applied), (
            f"the runner's ledger disagrees with the version: {where}"
        )
    return State(version, applied)


def advisory_locks(db: Database) -> int:
    return db.advisory_locks()


def runner_backends(db: Database) -> int:
    return db.query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
        "application_name LIKE 'migration-runner/%%'",
        (db.name,),
    )[0][0]


def seconds_until(predicate: Callable[[], bool], since: float, timeout: float, what: str) -> float:
    """Poll ``predicate`` (every 20 ms, at most ``timeout`` s); return the seconds from
    ``since`` (a monotonic time) to the first time it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - since


def check_log(result: Result, context: str) -> list[dict[str, Any]]:
    """(f) for a run that was not SIGKILLed: no password, and the log contract."""
    result.assert_clean()  # JSON lines only, no password (raw or encoded), no Traceback
    try:
        return result.check_log_contract()
    except AssertionError as exc:
        raise AssertionError(f"{context}\n{exc}") from None


def check_reported(
    events: list[dict[str, Any]],
    before: State,
    after: State,
    context: str,
    *,
    commit_may_be_unknown: bool,
) -> None:
    """The faulted run's report agrees with what it did to the database: what it says it
    applied is applied; what was applied is reported (when the connection was lost, the
    outcome of the commit in flight may be unknown to the runner: one revision of slack)."""
    summary = events[-1]
    logged = [e["revision"] for e in events if e["event"] == "revision.applied"]
    changed = after.applied[len(before.applied) :]
    assert after.applied[: len(before.applied)] == before.applied, f"{context}: went backwards"
    assert logged == summary["applied"], f"{context}: revision.applied events != summary.applied"
    assert summary["applied"] == changed[: len(summary["applied"])], (
        f"{context}: summary.applied {summary['applied']} not what was committed {changed}"
    )
    slack = 1 if commit_may_be_unknown else 0
    assert len(changed) - len(summary["applied"]) <= slack, (
        f"{context}: committed {changed} but reported only {summary['applied']}"
    )
    if not commit_may_be_unknown and summary["to_revision"] is not None:
        assert summary["to_revision"] == after.version, (
            f"{context}: summary.to_revision {summary['to_revision']} != database {after.version}"
        )


def check_next_run(
    db: Database,
    project: Project,
    before: State,
    context: str,
    revs: list[str] = REVS,
    env: dict[str, str] | None = None,
) -> Result:
    """(e): a normal run completes at head, applying exactly what was pending."""
    result = run(env or env_for(db, project), timeout=90)
    where = f"{context}\nnext run exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == 0, where
    events = check_log(result, context + " (next run)")
    after = check_schema(db, context + " (after the next run)", revs)
    assert after.applied == revs, where
    assert events[-1]["applied"] == revs[len(before.applied) :], where
    assert events[-1]["outcome"] == ("up_to_date" if before.applied == revs else "migrated"), where
    assert advisory_locks(db) == 0, where
    return result


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[..., Running]]:
    """Start runner processes; any still running at the end is killed."""
    started: list[Running] = []

    def start(env: dict[str, str], *args: str) -> Running:
        proc = Running(env, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(timeout=10)


@pytest.fixture
def databases(server: Server) -> Iterator[Callable[[], Database]]:
    """Fresh databases on demand (one per seed), dropped afterwards."""
    made: list[str] = []

    def make() -> Database:
        name = f"f_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{server.user}"')
        made.append(name)
        return Database(server, name)

    yield make
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def proxy(server: Server) -> Iterator[TcpProxy]:
    with TcpProxy(server.port) as tcp:
        yield tcp


class Invariants:
    """The invariant checks of a matrix of faults, counted: a violated one is recorded
    (and its run's row says so) and the matrix goes on, so that the report gives the real
    number; the test then fails if there was any."""

    def __init__(self) -> None:
        self.runs = 0
        self.violations: list[str] = []

    @contextlib.contextmanager
    def check(self, context: str, rows: list[str]) -> Iterator[None]:
        self.runs += 1
        try:
            yield
        except AssertionError as exc:
            self.violations.append(f"{context}: {exc}")
            rows.append(f"{context}: INVARIANT VIOLATED: {str(exc).splitlines()[0][:200]}")

    def assert_none(self) -> None:
        assert not self.violations, (
            f"{len(self.violations)} of {self.runs} runs violated an "
            "invariant:\n" + "\n\n".join(self.violations)
        )


def report(
    record_property: Callable[[str, Any], None], name: str, lines: list[str], **numbers: Any
) -> None:
    print(f"\n[{name}] FAULTS_SEED={SEED}")
    for line in lines:
        print("  " + line)
    for key, value in numbers.items():
        print(f"  {key}: {value}")
        record_property(key, value)


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"n={len(values)} median {statistics.median(values) * 1000:.0f} ms, "
        f"max {max(values) * 1000:.0f} ms"
    )


# --- random points keyed on the runner's events -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    event: str
    revision: str | None
    delay_s: float

    def __str__(self) -> str:
        on = f"{self.event}({self.revision})" if self.revision else self.event
        return f"{on}+{self.delay_s * 1000:.0f}ms"


def pick_point(rng: random.Random, events: list[str]) -> Point:
    event = rng.choice(events)
    revision = rng.choice(REVS) if event.startswith("revision.") else None
    return Point(event, revision, round(rng.uniform(0, 0.3), 3))


def wait_for_point(proc: Running, point: Point, context: str, timeout: float = 30) -> None:
    try:
        while True:
            event = proc.wait_for_event(point.event, timeout=timeout)
            if point.revision is None or event.get("revision") == point.revision:
                break
    except AssertionError as exc:
        raise AssertionError(f"{context}: {exc}") from None
    time.sleep(point.delay_s)  # the random part of the fault's position, not a wait


# --- 1. SIGKILL at random points ---------------------------------------------------------


def test_sigkill_at_random_points_loses_nothing(databases, project, spawn, record_property):
    write_chain(project)
    rng = random.Random(SEED)
    rows, lock_release, backend_gone, runs = [], [], [], []
    killed = mid_revision = 0
    invariants = Invariants()
    for index in range(_count("FAULTS_KILL_SEEDS", 12)):
        db = databases()
        point = pick_point(
            rng,
            [
                "db.connected",
                "lock.acquired",
                "revision.started",
                "revision.started",
                "revision.applied",
            ],
        )
        context = f"SIGKILL seed {SEED}#{index} at {point}"
        proc = spawn(env_for(db, project, FAULT_STEP_S=STEP_S))
        wait_for_point(proc, point, context)
        sent = proc.signal(signal.SIGKILL)
        result = proc.finish(timeout=30)
        with invariants.check(context, rows):
            assert result.code in (-signal.SIGKILL, 0), (
                f"{context}: exit {result.code}\n{result.stdout}"
            )
            lines = "".join(proc.lines)
            held = "lock.acquired" in lines and "lock.released" not in lines
            complete = result.stdout[: result.stdout.rfind("\n") + 1]  # a kill may cut a line short
            dataclasses.replace(result, stdout=complete).assert_clean()
            phase = last_step(complete)
            # (d) the server notices the dead client and frees its lock (bounded wait)
            freed = seconds_until(
                lambda db=db: advisory_locks(db) == 0, sent, 30, f"{context}: lock free"
            )
            gone = seconds_until(
                lambda db=db: runner_backends(db) == 0, sent, 30, f"{context}: backends gone"
            )
            if result.code == 0:
                check_log(result, context)
            else:
                killed += 1
                mid_revision += phase.startswith("revision.started")
                if held:
                    lock_release.append(freed)
                    backend_gone.append(gone)
            before = check_schema(db, context)
            nxt = check_next_run(db, project, before, context)
            runs.append(nxt.elapsed)
            outcome = f"killed after {phase}" if result.code else "finished first"
            rows.append(
                f"#{index} {point}: {outcome}, "
                f"left at {before.version or 'base'}, lock {'held' if held else 'not held'} "
                f"-> free after {freed * 1000:.0f} ms; next run {nxt.elapsed:.1f} s"
            )
    report(
        record_property,
        "SIGKILL",
        rows,
        faults_injected=invariants.runs,
        killed=killed,
        killed_with_a_revision_in_flight=mid_revision,
        invariant_violations=len(invariants.violations),
        lock_freed_after_kill=ms(lock_release),
        backends_gone_after_kill=ms(backend_gone),
        next_run_s=ms(runs),
    )
    invariants.assert_none()


def last_step(stdout: str) -> str:
    """The last step the runner logged: where a fault landed."""
    steps = [
        e
        for e in (json.loads(line) for line in stdout.splitlines())
        if e["event"]
        in (
            "db.connected",
            "lock.acquired",
            "revision.started",
            "revision.applied",
            "lock.released",
            "summary",
        )
    ]
    if not steps:
        return "start-up"
    last = steps[-1]
    return last["event"] + (f"({last['revision']})" if "revision" in last else "")


# --- 2. SIGTERM at random points ---------------------------------------------------------


def test_sigterm_at_random_points_rolls_back_and_reports(
    databases, project, spawn, record_property
):
    write_chain(project)
    rng = random.Random(SEED + 1)
    rows, to_exit = [], []
    interrupted = 0
    invariants = Invariants()
    for index in range(_count("FAULTS_TERM_SEEDS", 8)):
        db = databases()
        point = pick_point(
            rng,
            [
                "scripts.loaded",
                "db.connected",
                "lock.acquired",
                "revision.started",
                "revision.started",
                "revision.applied",
            ],
        )
        context = f"SIGTERM seed {SEED}#{index} at {point}"
        proc = spawn(env_for(db, project, FAULT_STEP_S=STEP_S))
        wait_for_point(proc, point, context)
        sent = proc.signal(signal.SIGTERM)
        result = proc.finish(timeout=30)
        exited = time.monotonic() - sent if result.code == ExitCode.INTERRUPTED else None
        with invariants.check(context, rows):
            where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
            assert not (result.code == -signal.SIGTERM and _finished_before(result)), (
                f"{KILLED_AFTER_SUMMARY}\n{where}"
            )
            assert not term_as_internal(result), f"{TERM_AS_INTERNAL}\n{where}"
            assert result.code in (ExitCode.INTERRUPTED, ExitCode.OK), where
            events = check_log(result, context)
            summary = events[-1]
            if result.code == ExitCode.INTERRUPTED:
                interrupted += 1
                assert exited is not None and exited < 5, (
                    f"{context}: exited {exited} s after SIGTERM"
                )
                assert summary["outcome"] == "interrupted", where
                assert (
                    events[-2]["error_code"] == "interrupted" and events[-2]["signal"] == "SIGTERM"
                ), where
                to_exit.append(exited)
            else:
                assert summary["outcome"] in ("migrated", "up_to_date"), where
            # (d) released by the runner itself: only a short bound
            seconds_until(lambda db=db: advisory_locks(db) == 0, sent, 5, f"{context}: lock free")
            before = check_schema(db, context)
            check_reported(events, State([], []), before, context, commit_may_be_unknown=False)
            check_next_run(db, project, before, context)
            rows.append(
                f"#{index} {point}: exit {result.code}, left at {before.version or 'base'}"
                + (f", exited {exited * 1000:.0f} ms after the signal" if exited else "")
            )
    report(
        record_property,
        "SIGTERM",
        rows,
        faults_injected=invariants.runs,
        interrupted=interrupted,
        invariant_violations=len(invariants.violations),
        signal_to_exit=ms(to_exit),
    )
    invariants.assert_none()


def _finished_before(result: Result) -> bool:
    """The run had completed and logged its summary (exit_code 0) before it died."""
    lines = result.stdout.splitlines()
    if not lines:
        return False
    last = json.loads(lines[-1])
    return last["event"] == "summary" and last["exit_code"] == 0


KILLED_AFTER_SUMMARY = (
    "runner bug: a SIGTERM that arrives after the summary line, while the "
    "interpreter shuts down (0.1-0.4 s here), kills the process (status -15, "
    "143 in a shell) although the summary says exit_code 0"
)


def test_sigterm_after_the_summary_keeps_the_exit_code(database, project, spawn):
    write_chain(project, REVS[:1])
    proc = spawn(env_for(database, project))
    proc.wait_for_event("summary")
    signals = 0
    while proc.proc.poll() is None and signals < 200:  # ECS sends one; a few make sure the
        proc.signal(signal.SIGTERM)  # shut-down window is hit
        signals += 1
        time.sleep(0.02)
    result = proc.finish(timeout=30)
    assert check_schema(database, "after").applied == REVS[:1]
    assert advisory_locks(database) == 0
    assert result.code == ExitCode.OK, f"exit {result.code} after a summary saying 0"
    check_log(result, "SIGTERM after the summary")


TERM_AS_INTERNAL = (
    "runner bug: a SIGTERM while a side session's query is in flight exits 1 "
    "'internal error: OperationalError: another command is already in progress' "
    "instead of 130 (found in the pooler probe, since replaced by a check on the session "
    "itself: a rollback in a finally on a busy connection replaced Interrupted)"
)


def term_as_internal(result: Result) -> bool:
    return (
        result.code == ExitCode.INTERNAL
        and '"error_code": "internal"' in result.stdout
        and "another command is already in progress" in result.stdout
    )


def test_sigterm_during_the_pooler_check(database, project, spawn):
    """A SIGTERM lands while the runner's pre-lock pooler check (``SELECT pg_backend_pid()``
    on its own session) is in flight. To hold it there, the test database resolves
    pg_backend_pid() to a slow wrapper first (search_path), so the query takes three seconds:
    a window a loaded machine's poll does not miss (one second was missed once)."""
    write_chain(project)
    with database.connect() as conn:
        conn.execute("CREATE SCHEMA slow")
        conn.execute(
            "CREATE FUNCTION slow.pg_backend_pid() RETURNS int LANGUAGE sql AS "
            "'SELECT pg_catalog.pg_sleep(3); SELECT pg_catalog.pg_backend_pid()'"
        )
        conn.execute(f'ALTER DATABASE "{database.name}" SET search_path = slow, pg_catalog, public')
    proc = spawn(env_for(database, project))
    seconds_until(
        lambda: (
            database.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                "AND application_name LIKE 'migration-runner/%%' "
                "AND query = 'SELECT pg_backend_pid()'",
                (database.name,),
            )[0][0]
            == 1
        ),
        time.monotonic(),
        30,
        "the pooler check's query to be running",
    )
    sent = proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=30)
    exited = time.monotonic() - sent
    with database.connect() as conn:
        conn.execute(f'ALTER DATABASE "{database.name}" RESET search_path')
        conn.execute("DROP SCHEMA slow CASCADE")
    where = f"exit {result.code} {exited:.1f} s after SIGTERM\n{result.stdout}\n{result.stderr}"
    assert exited < 5, where
    seconds_until(lambda: advisory_locks(database) == 0, sent, 5, "lock free")
    before = check_schema(database, "SIGTERM during the pooler check")
    assert before.applied == [], where
    check_next_run(database, project, before, "SIGTERM during the pooler check")
    assert result.code == ExitCode.INTERRUPTED, where
    events = check_log(result, "SIGTERM during the pooler check")
    assert events[-1]["outcome"] == "interrupted", where


# --- 3. PostgreSQL stopped mid-revision and started again --------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_revision(stopped_cluster, project, spawn, mode, record_property):
    # The throwaway clusters run with synchronous_commit=off (fast, not durable): after an
    # immediate shutdown (a crash, to PostgreSQL) they lose commits they acknowledged, which
    # this test would rightly report as a revision the runner applied and the database lost.
    # A real server is durable: so is this one.
    stopped_cluster.start(synchronous_commit="on")
    cluster_server = Server(
        host="127.0.0.1",
        port=stopped_cluster.port,
        user="postgres",
        password=PASSWORD,
        admin_conninfo=stopped_cluster.conninfo(),
    )
    db = Database(cluster_server, "postgres")
    write_chain(project)
    context = f"PostgreSQL {mode} shutdown during r3"
    proc = spawn(env_for(db, project, FAULT_AT_R3="hold=30"))
    while proc.wait_for_event("revision.started", timeout=30)["revision"] != "r3":
        pass
    seconds_until(
        lambda: (
            db.query(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'SELECT pg_sleep(30%%'"
            )[0][0]
            == 1
        ),
        time.monotonic(),
        10,
        "r3's statement to be running",
    )
    stopped = time.monotonic()
    stopped_cluster.stop(mode)
    result = proc.finish(timeout=30)
    exited = time.monotonic() - stopped
    stopped_cluster.start()
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code in (ExitCode.CONNECTION_LOST, ExitCode.MIGRATION_FAILED), where
    events = check_log(result, context)
    error = events[-2]
    assert error["revision"] == "r3", where
    if result.code == ExitCode.CONNECTION_LOST:
        assert error["error_code"] == "connection_lost", where
    assert advisory_locks(db) == 0, where  # a restarted server holds no session locks
    after = check_schema(db, context)
    assert after.applied == ["r1", "r2"], where
    check_reported(events, State([], []), after, context, commit_may_be_unknown=True)
    check_next_run(db, project, after, context)
    report(
        record_property,
        f"restart-{mode}",
        [
            f"exit {result.code} ({error['error_code']}) {exited:.1f} s after the stop began: "
            f"{error['message']}"
        ],
        faults_injected=1,
    )


# --- 4. The TCP connection cut or black-holed ---------------------------------------------


def _hold_r2(db: Database, proc: Running, timeout: float = 30) -> None:
    while proc.wait_for_event("revision.started", timeout=timeout)["revision"] != "r2":
        pass
    seconds_until(
        lambda: (
            db.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                "state = 'active' AND query LIKE 'SELECT pg_sleep(%%'",
                (db.name,),
            )[0][0]
            == 1
        ),
        time.monotonic(),
        10,
        "r2's statement to be running",
    )


def _in_r2_through(
    proxy: Any, db: Database, project: Project, spawn: Any, hold_s: float
) -> Running:
    """A runner on the chain, connected through ``proxy``, once r2's statement (a pg_sleep
    of ``hold_s``) is running."""
    write_chain(project)
    proc = spawn(
        env_for(
            db,
            project,
            FAULT_AT_R2=f"hold={hold_s}",
            DATABASE_URL=proxy.url(db.server.user, PASSWORD, db.name),
        )
    )
    _hold_r2(db, proc)
    return proc


LOST_AS_INTERNAL = (
    "runner bug: a connection lost outside a revision (waiting for the lock, "
    "reading the version) exits 1 'internal error, please report' instead of 10"
)


def _after_network_fault(
    db: Database, project: Project, result: Result, since: float, context: str
) -> tuple[float, float, State]:
    """The runner exited on its own: (f), (d) timed, (a)-(c), report check, (e)."""
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == ExitCode.CONNECTION_LOST, (
        f"{LOST_AS_INTERNAL}\n{where}" if result.code == ExitCode.INTERNAL else where
    )
    events = check_log(result, context)
    assert events[-2]["error_code"] == "connection_lost", where
    gone = seconds_until(lambda: runner_backends(db) == 0, since, 60, f"{context}: backends gone")
    freed = seconds_until(lambda: advisory_locks(db) == 0, since, 60, f"{context}: lock free")
    after = check_schema(db, context)
    check_reported(events, State([], []), after, context, commit_may_be_unknown=True)
    check_next_run(db, project, after, context)  # direct, not through the proxy
    return gone, freed, after


def test_tcp_cut_mid_statement(database, project, proxy, spawn, record_property):
    context = "TCP cut (RST) during r2's statement"
    proc = _in_r2_through(proxy, database, project, spawn, hold_s=30)
    cut = time.monotonic()
    assert proxy.cut() >= 1
    result = proc.finish(timeout=30)
    exited = time.monotonic() - cut
    assert exited < 10, f"{context}: the runner took {exited:.1f} s to notice"
    gone, freed, after = _after_network_fault(database, project, result, cut, context)
    assert after.applied == ["r1"], context
    report(
        record_property,
        "tcp-cut",
        [result.events[-2]["message"]],
        faults_injected=1,
        runner_exit_after_cut_ms=int(exited * 1000),
        server_backend_gone_after_cut_ms=int(gone * 1000),
        lock_free_after_cut_ms=int(freed * 1000),
    )


def test_tcp_cut_at_random_points(databases, project, server, spawn, record_property):
    write_chain(project)
    rng = random.Random(SEED + 2)
    rows, exits = [], []
    invariants = Invariants()
    for index in range(_count("FAULTS_CUT_SEEDS", 3)):
        db = databases()
        point = pick_point(rng, ["lock.acquired", "revision.started", "revision.applied"])
        context = f"TCP cut seed {SEED}#{index} at {point}"
        with TcpProxy(server.port) as tcp:
            proc = spawn(
                env_for(
                    db,
                    project,
                    FAULT_STEP_S=STEP_S,
                    DATABASE_URL=tcp.url(db.server.user, PASSWORD, db.name),
                )
            )
            wait_for_point(proc, point, context)
            cut = time.monotonic()
            tcp.cut()
            result = proc.finish(timeout=30)
        with invariants.check(context, rows):
            if result.code == 0:  # finished before the cut
                check_log(result, context)
                before = check_schema(db, context)
                check_next_run(db, project, before, context)
                rows.append(f"#{index} {point}: finished first")
            else:
                exits.append(time.monotonic() - cut)
                _gone, freed, after = _after_network_fault(db, project, result, cut, context)
                rows.append(
                    f"#{index} {point}: exit {result.code}, left at {after.version or 'base'}, "
                    f"lock free after {freed * 1000:.0f} ms"
                )
    report(
        record_property,
        "tcp-cut-random",
        rows,
        faults_injected=invariants.runs,
        invariant_violations=len(invariants.violations),
        runner_exit_after_cut=ms(exits),
    )
    invariants.assert_none()


def test_tcp_cut_while_waiting_for_the_lock(database, project, proxy, spawn, record_property):
    """A waiter holds nothing: when its session is lost (a failover while it waits) it
    reconnects within its budgets and waits on, then migrates once the holder lets go."""
    write_chain(project)
    context = "TCP cut while the runner waits for the migration lock"
    with database.connect(application_name="fault-holder") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
        proc = spawn(
            env_for(
                database,
                project,
                DATABASE_URL=proxy.url(database.server.user, PASSWORD, database.name),
            )
        )
        proc.wait_for_event("lock.waiting", timeout=30)
        cut = time.monotonic()
        assert proxy.cut() >= 1
        proc.wait_for_event("lock.reconnecting", timeout=10)
        reconnected = time.monotonic() - cut
        proc.wait_for_event("lock.waiting", timeout=30)  # waiting again, on a new session
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        result = proc.finish(timeout=60)
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == 0, where
    check_log(result, context)
    after = check_schema(database, context)
    assert after.applied == REVS, where
    assert advisory_locks(database) == 0, where
    report(
        record_property,
        "tcp-cut-lock-wait",
        [f"reconnected after {reconnected * 1000:.0f} ms"],
        faults_injected=1,
        runner_noticed_cut_ms=int(reconnected * 1000),
    )


def test_tcp_blackhole_mid_statement(database, project, proxy, spawn, record_property):
    """The proxy stops forwarding without closing anything. To both peers the connection
    then looks alive and silent (the proxy's kernel ACKs their keepalive probes): neither the
    runner's keepalives nor the server's client_connection_check_interval can tell it from
    a slow peer, as with a hung pooler. We observe for FAULTS_BLACKHOLE_S, then cut (RST)
    and check that the runner reports it and the server frees the lock. (A real partition,
    packets dropped between two network namespaces, was measured by hand: during a running
    statement both sides gave up after ~25 s of keepalives; once the server had sent a
    result into the partition, its backend kept the lock ~940 s, until TCP retransmissions
    gave up, since keepalives do not run while data is unacknowledged: which is why the
    runner now sets tcp_user_timeout on both sides.)"""
    window = float(os.environ.get("FAULTS_BLACKHOLE_S") or 6)
    context = "TCP black hole during r2's statement"
    proc = _in_r2_through(proxy, database, project, spawn, hold_s=2)
    holed = time.monotonic()
    assert proxy.blackhole() >= 1
    deadline = holed + window
    runner_exit = backend_gone = None
    while time.monotonic() < deadline and (runner_exit is None or backend_gone is None):
        if runner_exit is None and proc.proc.poll() is not None:
            runner_exit = time.monotonic() - holed
        if backend_gone is None and runner_backends(database) == 0:
            backend_gone = time.monotonic() - holed
        time.sleep(0.1)
    holding = advisory_locks(database)
    cut = time.monotonic()
    proxy.cut()
    result = proc.finish(timeout=30)
    exited = time.monotonic() - cut
    gone, freed, after = _after_network_fault(database, project, result, cut, context)
    assert after.applied == ["r1"], context
    observed = [
        f"black hole for {window:g} s: runner "
        + (f"exited after {runner_exit:.1f} s" if runner_exit is not None else "still waiting")
        + ", server backend "
        + (f"gone after {backend_gone:.1f} s" if backend_gone is not None else "still alive")
        + f", advisory locks held: {holding}",
        f"then cut: runner exited {exited * 1000:.0f} ms later, backend gone {gone * 1000:.0f} ms, "
        f"lock free {freed * 1000:.0f} ms",
    ]
    report(
        record_property,
        "tcp-blackhole",
        observed,
        faults_injected=1,
        blackhole_window_s=window,
        runner_noticed_blackhole_s=runner_exit if runner_exit is not None else "never",
        server_noticed_blackhole_s=backend_gone if backend_gone is not None else "never",
        lock_free_after_cut_ms=int(freed * 1000),
    )


# --- 5. The database refusing connections past the wait budget ----------------------------


def database_url(port: int, dbname: str) -> str:
    return pg_url("postgres", PASSWORD, "127.0.0.1", port, dbname, scheme="postgresql")


def allow_connections(server: Server, database: Database, allow: bool) -> None:
    with psycopg.connect(server.admin_conninfo, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS {str(allow).lower()}')


@pytest.mark.parametrize("how", ["port_closed", "reset_on_connect", "datallowconn_false"])
def test_database_refusing_connections_exits_unreachable(
    how, database, project, server, record_property
):
    write_chain(project)
    env = env_for(database, project)
    assert run(dict(env), "upgrade", "r2").code == 0
    before = check_schema(database, how)
    assert before.applied == ["r1", "r2"]
    budget = 2
    with contextlib.ExitStack() as stack:
        if how == "port_closed":
            url = database_url(free_port(), database.name)
        elif how == "reset_on_connect":
            tcp = stack.enter_context(TcpProxy(server.port))
            tcp.refuse()
            url = database_url(tcp.port, database.name)
        else:
            allow_connections(server, database, False)
            stack.callback(allow_connections, server, database, True)
            url = database.url()
        result = run(dict(env, DATABASE_URL=url, MIGRATION_DB_WAIT_TIMEOUT=str(budget)), timeout=60)
    context = f"refusing connections ({how})"
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == ExitCode.UNREACHABLE, where
    events = check_log(result, context)
    error = events[-2]
    assert error["error_code"] == "unreachable", where
    assert "MIGRATION_DB_WAIT_TIMEOUT" in error["message"], where
    failed = [e for e in events if e["event"] == "db.connect_failed"]
    assert failed and failed[-1]["next_delay_s"] is None, where
    assert error["attempts"] == len(failed) == failed[-1]["attempt"], where
    assert result.elapsed < budget + 15, where
    assert advisory_locks(database) == 0
    assert check_schema(database, context) == before, "the database changed"
    check_next_run(database, project, before, context)
    report(
        record_property,
        f"refused-{how}",
        [
            f"exit 3 after {result.elapsed:.1f} s, {len(failed)} attempts "
            f"(kind {failed[-1]['error_kind']}): {error['message']}"
        ],
        faults_injected=1,
    )


def test_unreachable_summary_counts_the_connect_attempts(project):
    write_chain(project, REVS[:1])
    result = run(
        env_for(
            None,
            project,
            DATABASE_URL=database_url(free_port(), "db"),
            MIGRATION_DB_WAIT_TIMEOUT="1",
        )
    )
    assert result.code == ExitCode.UNREACHABLE
    check_log(result, "unreachable")
    attempts = [e for e in result.events if e["event"] == "db.connect_failed"]
    assert result.event("error")["attempts"] == len(attempts) >= 1
    assert result.summary["connect_attempts"] == len(attempts)


# --- 6, 7. A revision failing --------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,expect",
    [
        ("raise", "planted failure in r3"),
        ("sqlerror", "division by zero"),
        # PostgreSQL 18 quotes the name: 'exceeds "temp_file_limit"'; 15 and 17 do not
        ("tempfile", "temporary file size exceeds"),
        ("exit", "ended the process itself"),  # sys.exit(0): once a green deploy (exit 0)
        ("keyboard", "ended the process itself"),  # once a raw traceback and -2
    ],
)
def test_failing_revision_rolls_back_alone(fault, expect, database, project, record_property):
    write_chain(project)
    if fault == "tempfile":  # a superuser's setting: the revision's role may not set it
        with psycopg.connect(database.server.admin_conninfo, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE \"{database.name}\" SET temp_file_limit = '1MB'")
    context = f"r3 failing ({fault})"
    result = run(env_for(database, project, **{"FAULT_AT_R3": fault}), timeout=90)
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == ExitCode.MIGRATION_FAILED, where
    events = check_log(result, context)
    error = events[-2]
    assert error["error_code"] == "migration_failed" and error["revision"] == "r3", where
    assert expect in error["message"], where
    assert advisory_locks(database) == 0, where  # released by the runner, at once
    after = check_schema(database, context)
    assert after.applied == ["r1", "r2"], where  # the previous revisions stay
    check_reported(events, State([], []), after, context, commit_may_be_unknown=False)
    check_next_run(database, project, after, context)
    report(record_property, f"failing-{fault}", [error["message"]], faults_injected=1)


# --- 8. The fault kinds of issue 10 (an adversarial afternoon) -----------------------------

STOCK_ENV_PY = ENV_PY.replace(
    'connection = config.attributes.get("connection")',
    "connection = None  # the stock template: its own engine",
)


def test_sigterm_to_a_revision_busy_in_python(database, project, spawn, record_property):
    write_chain(project)
    context = "SIGTERM while r3 spins in Python"
    proc = spawn(env_for(database, project, FAULT_AT_R3="spin"))
    while proc.wait_for_event("revision.started", timeout=30)["revision"] != "r3":
        pass
    seconds_until(
        lambda: (
            database.query(  # r3's audit row sent, then Python spins
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND query LIKE 'INSERT INTO audit (rev) VALUES (''r3'')%%'"
            )[0][0]
            == 1
        ),
        time.monotonic(),
        10,
        "r3 to spin",
    )
    sent = proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=30)
    exited = time.monotonic() - sent
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == ExitCode.INTERRUPTED, where
    events = check_log(result, context)
    assert events[-2].get("stuck") is True, where
    assert exited < 15, where
    seconds_until(lambda: advisory_locks(database) == 0, sent, 10, f"{context}: lock free")
    after = check_schema(database, context)
    assert after.applied == ["r1", "r2"], where
    check_reported(events, State([], []), after, context, commit_may_be_unknown=False)
    check_next_run(database, project, after, context)
    report(
        record_property,
        "sigterm-spin",
        [events[-2]["message"]],
        faults_injected=1,
        runner_exit_after_signal_ms=int(exited * 1000),
    )


def test_lock_session_terminated_while_env_py_migrates_on_its_own(
    database, project, spawn, record_property
):
    write_chain(project)
    (project.root / "migrations" / "env.py").write_text(STOCK_ENV_PY)
    context = "lock session terminated during r2 (env.py's own connection)"
    proc = spawn(env_for(database, project, FAULT_AT_R2="hold=30"))
    lock_pid = proc.wait_for_event("db.connected")["backend_pid"]
    _hold_r2(database, proc)
    killed = time.monotonic()
    database.query("SELECT pg_terminate_backend(%s)", (lock_pid,))
    result = proc.finish(timeout=30)
    exited = time.monotonic() - killed
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == ExitCode.CONNECTION_LOST, where
    events = check_log(result, context)
    assert events[-2]["revision"] == "r2" and "revision r2" in events[-2]["message"], where
    assert exited < 10, where
    gone = seconds_until(
        lambda: runner_backends(database) == 0, killed, 10, f"{context}: the migrating backend gone"
    )
    after = check_schema(database, context)
    assert after.applied == ["r1"], where
    check_reported(events, State([], []), after, context, commit_may_be_unknown=False)
    check_next_run(database, project, after, context)
    report(
        record_property,
        "lock-session-lost-own-engine",
        [events[-2]["message"]],
        faults_injected=1,
        runner_exit_after_kill_ms=int(exited * 1000),
        migrating_backend_gone_after_kill_ms=int(gone * 1000),
    )


def test_version_table_locked_by_another_session(database, project, record_property):
    write_chain(project)
    context = "LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE by another session"
    assert run(env_for(database, project), "upgrade", "r2").code == 0
    before = check_schema(database, context)
    with database.connect(application_name="fault-locker") as locker:
        locker.autocommit = False
        locker.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        result = run(env_for(database, project), timeout=90)
        locker.rollback()
    where = f"{context}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.code == ExitCode.MIGRATION_BLOCKED, where
    events = check_log(result, context)
    assert "fault-locker" in events[-2]["message"], where
    assert check_schema(database, context) == before, where
    assert advisory_locks(database) == 0, where
    check_next_run(database, project, before, context)
    report(
        record_property,
        "version-table-locked",
        [events[-2]["message"]],
        faults_injected=1,
        runner_exit_ms=int(result.elapsed * 1000),
    )


# --- the checks can fail -------------------------------------------------------------------


def test_the_invariant_checks_catch_planted_violations(database, project):
    """Every check above must be able to fail: plant each kind of violation in a migrated
    database, expect an AssertionError, undo it and expect the clean state again."""
    write_chain(project)
    assert run(env_for(database, project), "upgrade", "r3").code == 0
    state = check_schema(database, "clean")
    assert state.applied == ["r1", "r2", "r3"]
    plants = {  # name: (plant, undo)
        "stray audit row": (
            "INSERT INTO audit (rev) VALUES ('r2')",
            "DELETE FROM audit WHERE rev = 'r2'; INSERT INTO audit (rev) VALUES ('r2')",
        ),
        "audit row of an unapplied revision": (
            "INSERT INTO audit (rev) VALUES ('r4')",
            "DELETE FROM audit WHERE rev = 'r4'",
        ),
        "missing audit row": (
            "DELETE FROM audit WHERE rev = 'r1'",
            "INSERT INTO audit (rev) VALUES ('r1')",
        ),
        "table of an unapplied revision": ("CREATE TABLE t_r4 (id int)", "DROP TABLE t_r4"),
        "stray table": ("CREATE TABLE t_half_done (id int)", "DROP TABLE t_half_done"),
        "missing table": ("DROP TABLE t_r2", "CREATE TABLE t_r2 (id int)"),
        "half-applied revision (column missing)": (
            "ALTER TABLE audit DROP COLUMN c_r3",
            "ALTER TABLE audit ADD COLUMN c_r3 int",
        ),
        "half-applied revision (extra column)": (
            "ALTER TABLE audit ADD COLUMN c_r4 int",
            "ALTER TABLE audit DROP COLUMN c_r4",
        ),
        "version behind the schema": (
            "UPDATE alembic_version SET version_num = 'r2'",
            "UPDATE alembic_version SET version_num = 'r3'",
        ),
        "version unknown to the scripts": (
            "UPDATE alembic_version SET version_num = 'zz'",
            "UPDATE alembic_version SET version_num = 'r3'",
        ),
        "two versions": (
            "INSERT INTO alembic_version VALUES ('r1')",
            "DELETE FROM alembic_version WHERE version_num = 'r1'",
        ),
    }
    if database.table_exists(LEDGER):
        plants["ledger row missing"] = (
            f"CREATE TABLE ledger_copy AS SELECT * FROM {LEDGER}; "
            f"DELETE FROM {LEDGER} WHERE revision = 'r2'",
            f"INSERT INTO {LEDGER} SELECT * FROM ledger_copy WHERE revision = 'r2'; "
            "DROP TABLE ledger_copy",
        )
        plants["ledger row of an unapplied revision"] = (
            f"UPDATE {LEDGER} SET revision = 'r4' WHERE revision = 'r2'",
            f"UPDATE {LEDGER} SET revision = 'r2' WHERE revision = 'r4'",
        )
        plants["ledger says reverted"] = (
            f"UPDATE {LEDGER} SET outcome = 'reverted' WHERE revision = 'r2'",
            f"UPDATE {LEDGER} SET outcome = 'applied' WHERE revision = 'r2'",
        )
    for name, (plant, undo) in plants.items():
        with database.connect() as conn:
            for statement in plant.split("; "):
                conn.execute(statement)
        try:
            with pytest.raises(AssertionError):
                check_schema(database, name)
        finally:
            with database.connect() as conn:
                for statement in undo.split("; "):
                    conn.execute(statement)
        assert check_schema(database, f"after undoing {name}") == state
    # (d): a lock left behind is seen
    with database.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
        with pytest.raises(AssertionError):
            seconds_until(lambda: advisory_locks(database) == 0, time.monotonic(), 0.5, "lock")
    assert advisory_locks(database) == 0
    # (f): logs that break the rules are caught
    good = run(env_for(database, project))
    check_log(good, "clean")
    lines = good.stdout.splitlines()
    bad_logs = {
        "no summary": lines[:-1],
        "two summaries": lines + lines[-1:],
        "not JSON": lines[:1] + ["plain text"] + lines[1:],
        "password": lines[:1] + [json.dumps({"event": "x", "detail": PASSWORD})] + lines[1:],
        "traceback": lines[:1]
        + [json.dumps({"event": "Traceback (most recent call last)"})]
        + lines[1:],
        "failure without an error event": lines[:-1]
        + [lines[-1].replace('"exit_code": 0', '"exit_code": 6')],
    }
    for name, bad in bad_logs.items():
        code = 6 if name == "failure without an error event" else good.code
        with pytest.raises((AssertionError, ValueError)):
            check_log(Result(code, "\n".join(bad) + "\n", "", 0.0), name)
    # (e): a next run that applies something already applied is caught
    with pytest.raises(AssertionError):
        check_next_run(database, project, State(["r1"], ["r1"]), "planted: stale 'before'")
