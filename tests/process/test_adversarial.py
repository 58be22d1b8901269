"""What an adversarial afternoon broke (issue 10), one class of failure per section, each
against real PostgreSQL and real runner processes: the exit code is always the summary's,
predictable environment problems are configuration errors, values are validated where they
are read, waits are bounded, and nothing secret leaves the process."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from runner.errors import ExitCode
from tests.support.helpers import Running, command, run, runner_env, wait_until

# --- the exit code is always the summary's -------------------------------------------------


@pytest.mark.parametrize(
    "how", ["sys.exit(0)", "sys.exit(3)", "raise KeyboardInterrupt", "raise SystemExit('bye')"]
)
def test_a_revision_that_ends_the_process_is_a_failed_migration(how, database, project):
    project.revision("a1", None, "op.execute('CREATE TABLE t1 (id int)')")
    project.revision("a2", "a1", f"import sys\nop.execute('CREATE TABLE t2 (id int)')\n{how}")
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    error = result.event("error")
    assert error["revision"] == "a2" and "ended the process itself" in error["message"]
    assert database.version() == ["a1"] and not database.table_exists("t2")
    assert result.summary["applied"] == ["a1"]


@pytest.mark.parametrize("how", ["sys.exit(0)", "raise KeyboardInterrupt"])
def test_a_revision_that_ends_the_process_at_import_is_invalid_scripts(how, database, project):
    project.revision("a1", None, "pass")
    path = project.revision("a2", "a1", "pass")
    path.write_text(f"import sys\n{how}\n" + path.read_text())
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.SCRIPTS_INVALID, result.stdout
    assert "a2_step.py" in result.event("error")["message"]
    assert database.version() == []


def test_sigterm_while_the_revision_files_import_exits_interrupted(database, project, tmp_path):
    marker = tmp_path / "importing"
    project.revision("a1", None, "pass")
    path = project.revision("a2", "a1", "pass")
    path.write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(30)\n"
        + path.read_text()
    )
    proc = Running(runner_env(database, project))
    wait_until(marker.exists, what="the revision file's import")
    proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=20)
    result.check_log_contract()
    assert result.code == ExitCode.INTERRUPTED, result.stdout
    assert result.summary["outcome"] == "interrupted"


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _has_loaded(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def test_sigterm_before_the_imports_still_ends_with_a_summary(database, project):
    """The handler is in place before the runner imports pydantic (the bulk of its start-up):
    a signal then is honoured with a summary and 130, not the default death by SIGTERM."""
    project.revision("a1", None, "pass")
    proc = subprocess.Popen(
        command("upgrade"),
        env=runner_env(database, project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not _catches_sigterm(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.0005)
    early = not _has_loaded(proc.pid, "pydantic_core")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert early, "SIGTERM was caught only after pydantic was imported"
    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    assert out.splitlines()[-1].startswith("{") and '"event": "summary"' in out.splitlines()[-1]
    assert database.version() == []


# --- values are validated where they are read ----------------------------------------------


def _connected(result) -> bool:
    return any(e["event"] == "db.connected" for e in result.events)


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_secret_with_an_impossible_port_is_a_config_error_before_connecting(
    port, database, project
):
    project.revision("a1", None, "pass")
    env = runner_env(
        None,
        project,
        DB_HOST=database.server.host,
        DB_NAME=database.name,
        DB_SECRET='{"username": "%s", "password": "x", "port": %s}' % (database.server.user, port),  # noqa: UP031  (JSON braces)
        MIGRATION_DB_WAIT_TIMEOUT=30,
    )
    result = run(env)
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG and "port" in result.event("error")["message"]
    assert not _connected(result) and result.elapsed < 15


@pytest.mark.parametrize("setting", ["MIGRATION_DDL_LOCK_TIMEOUT", "MIGRATION_STATEMENT_TIMEOUT"])
def test_a_timeout_beyond_postgresqls_range_is_a_config_error(setting, database, project):
    project.revision("a1", None, "pass")
    result = run(runner_env(database, project, **{setting: "3e6"}))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG and setting in result.event("error")["message"]
    assert not _connected(result) and database.version() == []


@pytest.mark.parametrize("value", ['float("nan")', 'float("inf")', "1e300", "-1"])
def test_a_revision_option_that_cannot_work_is_invalid_before_connecting(value, database, project):
    project.revision("a1", None, "pass")
    path = project.revision("a2", "a1", "op.execute('CREATE TABLE t2 (id int)')")
    path.write_text(path.read_text() + f'\nmigration_runner = {{"lock_timeout": {value}}}\n')
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert (
        result.code == ExitCode.SCRIPTS_INVALID and "a2_step.py" in result.event("error")["message"]
    )
    assert not _connected(result) and database.version() == []


def test_a_tiny_positive_timeout_keeps_the_protection_on(database, project):
    """0.0001 s is 0.1 ms: rounded to 0 it would switch lock_timeout off; it must be 1 ms."""
    project.revision(
        "a1",
        None,
        """
        value = op.get_bind().exec_driver_sql("SHOW lock_timeout").scalar()
        assert value == "1ms", value
        op.execute("CREATE TABLE t1 (id int)")""",
    )
    result = run(runner_env(database, project, MIGRATION_DDL_LOCK_TIMEOUT="0.0001"))
    result.check_log_contract()
    assert result.code == 0, result.stdout
    assert database.version() == ["a1"]


# --- secrets: redaction after every truncation, on every path ------------------------------

from tests.support.helpers import PASSWORD  # noqa: E402

PREFIX = PASSWORD[:8]  # what a cut before redaction leaves of the password


def test_sslpassword_in_the_url_is_masked_in_start(database, project):
    project.revision("a1", None, "pass")
    key_password = "K3yPassw0rd-Long"
    result = run(
        runner_env(None, project, DATABASE_URL=database.url() + f"?sslpassword={key_password}")
    )
    result.check_log_contract()
    assert result.code == 0, result.stdout
    assert "sslpassword=***" in result.event("start")["settings"]["database_url"]
    result.assert_clean(key_password)


def test_an_error_detail_is_redacted_before_it_is_cut(database, project):
    project.revision("a1", None, f"raise RuntimeError('x' * 470 + {PASSWORD!r} + ' tail')")
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_FAILED
    assert PREFIX not in result.stdout + result.stderr, result.stdout
    result.assert_clean()


def test_a_blockers_password_literal_is_masked_before_its_query_is_cut(database, project):
    role_password = "Rol3Secret" * 8
    with database.connect() as setup:
        setup.execute("CREATE TABLE t (id int)")
    with database.admin() as admin:
        admin.execute("DROP ROLE IF EXISTS adversary")
        admin.execute("CREATE ROLE adversary")
    project.revision("a1", None, "op.execute('ALTER TABLE t ADD COLUMN c int')")
    with database.admin() as blocker:  # a role that may set another's password
        blocker.autocommit = False
        blocker.execute("LOCK TABLE t IN ACCESS SHARE MODE")
        blocker.execute(f"ALTER ROLE adversary PASSWORD '{role_password}'")  # its last query
        result = run(
            runner_env(
                database, project, MIGRATION_DDL_LOCK_TIMEOUT="0.5", MIGRATION_DDL_LOCK_RETRIES="1"
            )
        )
        blocker.rollback()
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_BLOCKED, result.stdout
    blockers = result.event("revision.blocked")["blockers"]
    assert blockers and "PASSWORD '***'" in blockers[0]["query"], blockers
    result.assert_clean("Rol3Secret")


def test_a_bare_secret_as_database_url_is_never_echoed(project):
    project.revision("a1", None, "pass")
    result = run(runner_env(None, project, DATABASE_URL="hunter2:Wordy-Secret"))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG
    result.assert_clean("hunter2", "Wordy-Secret")


# --- predictable environment problems are configuration errors (2) -------------------------

import uuid  # noqa: E402

from tests.support.urls import pg_url  # noqa: E402


@pytest.fixture
def plain_role(database):
    """A login role that owns nothing (PostgreSQL 15: no CREATE on schema public)."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    with database.admin() as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'role-pw-123'")
        admin.execute(f'GRANT CONNECT ON DATABASE "{database.name}" TO {name}')
    yield name
    with database.admin() as admin:
        admin.execute(f"DROP OWNED BY {name}")
    with psycopg.connect(database.server.admin_conninfo, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
        admin.execute(f"DROP ROLE {name}")


def _as(role: str, database) -> str:
    return pg_url(role, "role-pw-123", database.server.host, database.server.port, database.name)


def test_no_create_on_schema_public_names_the_grant(database, project, plain_role):
    project.revision("a1", None, "pass")
    result = run(runner_env(None, project, DATABASE_URL=_as(plain_role, database)))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stdout
    message = result.event("error")["message"]
    assert f"GRANT CREATE ON SCHEMA public TO {plain_role}" in message, message
    assert database.version() == []


def test_a_ledger_the_role_cannot_read_names_the_grant(database, project, plain_role):
    project.revision("a1", None, "pass")
    assert run(runner_env(database, project)).code == 0  # the owner creates the ledger
    project.revision("a2", "a1", "pass")
    with database.connect() as admin:
        admin.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {plain_role}")
        admin.execute(f"GRANT SELECT, UPDATE ON alembic_version TO {plain_role}")
    result = run(runner_env(None, project, DATABASE_URL=_as(plain_role, database)))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stdout
    assert 'GRANT SELECT, INSERT ON "migration_runner_ledger"' in result.event("error")["message"]


@pytest.mark.parametrize(
    "foreign",
    [
        "CREATE VIEW migration_runner_ledger AS SELECT 1 AS x",
        "CREATE TABLE migration_runner_ledger (id int, note text)",
        "CREATE SEQUENCE migration_runner_ledger",
    ],
)
def test_a_foreign_object_named_like_the_ledger_is_a_config_error(foreign, database, project):
    project.revision("a1", None, "pass")
    with database.connect() as admin:
        admin.execute(foreign)
    result = run(runner_env(database, project))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stdout
    assert "MIGRATION_LEDGER_TABLE" in result.event("error")["message"]
    assert database.version() == []


def test_a_missing_version_table_schema_is_a_config_error(database, project):
    project.revision("a1", None, "pass")
    result = run(runner_env(database, project, MIGRATION_VERSION_TABLE_SCHEMA="nosuch"))
    result.check_log_contract()
    assert result.code == ExitCode.CONFIG, result.stdout
    assert "CREATE SCHEMA nosuch" in result.event("error")["message"]


# --- every statement the runner issues itself is bounded -----------------------------------


@pytest.mark.parametrize("verb", ["upgrade", "check"])
def test_a_locked_version_table_ends_the_wait_naming_the_holder(verb, database, project):
    project.revision("a1", None, "pass")
    assert run(runner_env(database, project)).code == 0
    project.revision("a2", "a1", "pass")
    with database.connect() as holder:
        holder.autocommit = False
        holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        result = run(runner_env(database, project), verb, timeout=60)
        holder.rollback()
    result.check_log_contract()
    assert result.code == ExitCode.MIGRATION_BLOCKED, result.stdout + result.stderr
    error = result.event("error")
    assert f"pid {pid}" in error["message"] and "AccessExclusiveLock" in error["message"]
    assert result.elapsed < 40
    assert database.version() == ["a1"]


# --- every connection the runner opens: the same classification and wait budget ------------

from tests.support.tcpproxy import TcpProxy  # noqa: E402

#: a revision that ends only once the blocker watch (the runner's second connection) is in
WAITS_FOR_THE_WATCH = """
op.execute("CREATE TABLE t1 (id int)")
op.execute(
    "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_stat_activity "
    "WHERE application_name LIKE 'migration-runner/%watch') LOOP "
    "PERFORM pg_sleep(0.05); PERFORM pg_stat_clear_snapshot(); END LOOP; END $$"
)"""


def test_a_side_connection_is_retried_like_the_first(database, project):
    """Under connection pressure the blocker watch (the runner's second connection) meets
    the same transient failures as the first: retried within MIGRATION_DB_WAIT_TIMEOUT, not
    given up. The revision waits for the watch to be in (bounded by the statement timeout)."""
    project.revision("a1", None, WAITS_FOR_THE_WATCH)
    with TcpProxy(database.server.port) as proxy:
        proxy.refuse_later(after=1, count=2)
        result = run(
            runner_env(
                None,
                project,
                MIGRATION_DB_WAIT_TIMEOUT=30,
                MIGRATION_STATEMENT_TIMEOUT=30,
                DATABASE_URL=proxy.url(
                    database.server.user, database.server.password, database.name
                ),
            )
        )
    result.check_log_contract()
    assert result.code == 0, result.stdout
    failed = [e for e in result.events if e["event"] == "db.connect_failed"]
    assert [e["role"] for e in failed] == ["watch", "watch"], failed
    assert database.version() == ["a1"]


# --- a revision that ignores signals, and the lock never shared -----------------------------

from tests.support.helpers import ENV_PY  # noqa: E402


def test_a_revision_busy_in_python_is_stopped_after_a_grace(database, project, tmp_path):
    """SIGTERM cannot cancel a statement that is never sent: after STUCK_GRACE_S the runner
    terminates its own backend (the server rolls the revision back) and exits 130."""
    marker = tmp_path / "looping"
    project.revision(
        "a1",
        None,
        f"""
        import pathlib
        op.execute("CREATE TABLE t1 (id int)")
        pathlib.Path({str(marker)!r}).touch()
        while True:
            pass""",
    )
    proc = Running(runner_env(database, project))
    wait_until(marker.exists, what="the revision's loop")
    sent = proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=30)
    stopped = time.monotonic() - sent
    result.check_log_contract()
    assert result.code == ExitCode.INTERRUPTED, result.stdout + result.stderr
    assert result.event("error")["stuck"] is True
    assert stopped < 15, stopped
    wait_until(lambda: database.advisory_locks() == 0, timeout=10, what="the lock to be free")
    assert not database.table_exists("t1") and database.version() == []


OWN_ENGINE_ENV_PY = ENV_PY.replace(
    'connection = config.attributes.get("connection")',
    "connection = None  # the stock template: its own engine",
)
CONCURRENT = (
    "(SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
    "AND state = 'active' AND query LIKE 'SELECT pg_sleep(%%')"
)


def test_a_lost_lock_session_stops_the_migration_before_anyone_else_runs_it(database, project):
    """env.py migrates on its own connection; the lock session is terminated while a1 (an
    autocommit block, which Alembic's version row cannot protect) runs. The first runner's
    migrating backend is stopped at once and it exits 10 naming a1; a second runner that
    was waiting runs a1 only once nothing of the first's is running."""
    (project.root / "migrations" / "env.py").write_text(OWN_ENGINE_ENV_PY)
    with database.connect() as setup:
        setup.execute("CREATE TABLE hits (pid int, concurrent int)")
    project.revision(
        "a1",
        None,
        f"""
        with op.get_context().autocommit_block():
            op.execute("INSERT INTO hits SELECT pg_backend_pid(), {CONCURRENT}")
            # long for the first runner (stopped when its lock session goes), so a loaded
            # machine still starts the second one while a1 runs; none for the second
            op.execute("SELECT pg_sleep(CASE WHEN (SELECT count(*) FROM hits) = 1 THEN 60 ELSE 0 END)")""",
    )
    first = Running(runner_env(database, project))
    lock_pid = first.wait_for_event("db.connected")["backend_pid"]
    assert first.wait_for_event("migrate.mode")["mode"] == "separate_connection"
    first.wait_for_event("revision.started")
    wait_until(lambda: database.query("SELECT count(*) FROM hits")[0][0] == 1, what="a1 running")
    second = Running(runner_env(database, project))
    second.wait_for_event("lock.waiting")
    database.query("SELECT pg_terminate_backend(%s)", (lock_pid,))
    lost = first.finish(timeout=30)
    lost.check_log_contract()
    assert lost.code == ExitCode.CONNECTION_LOST, lost.stdout
    assert "revision a1" in lost.event("error")["message"], lost.event("error")
    done = second.finish(timeout=60)
    assert done.code == 0, done.stdout
    assert database.query("SELECT concurrent FROM hits ORDER BY pid") == [(0,), (0,)]
    assert database.version() == ["a1"]
