"""Reproductions of the promises (docs/promises.md) the hostile test of issue 21 broke
(attack21). Each test is marked ``xfail(strict=True)`` with its finding: it fails today (shown
as ``xfail``), and once the runner is fixed it passes and the strict mark turns that into a
failure, so whoever fixes it removes the mark. Real runner processes, real PostgreSQL."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.helpers import Project, command, run, runner_env
from tests.support.invariants import Observed, violations


def finding(number: int, what: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"attack21 finding {number}: {what}")


def _project(tmp_path) -> Project:
    project = Project(tmp_path / "p")
    project.revision("a1", None, "op.execute('CREATE TABLE t_a1 (id int)')")
    return project


# --- 1. upgrade --then: an app the exec cannot start is found only after the summary -------


@pytest.mark.parametrize("content", ["echo started\n", "", "#!/tmp\necho started\n"])
def test_then_with_an_app_that_cannot_be_executed_is_refused_before_migrating(
    content, database, tmp_path
):
    project = _project(tmp_path)
    app = tmp_path / "start.sh"  # +x, but the kernel cannot exec it (ENOEXEC / EACCES)
    app.write_text(content)
    app.chmod(0o755)
    result = run(runner_env(database, project), "upgrade", "--then", "--", str(app))
    observed = Observed("upgrade --then", result.code, result.stdout, result.stderr, "stdout")
    assert violations(observed, database) == [], result.stdout
    # promise 1: checked before migrating, so nothing was migrated for an app that cannot run
    assert result.code == 2 and database.version() == [], result.stdout


# --- 2. the log stream of a command that prints a result cannot be written -----------------


@pytest.mark.parametrize("argv", [("current", "--json"), ("heads",), ("sql",)])
@pytest.mark.parametrize("stderr", ["/dev/full", "reader gone"])
def test_a_command_whose_log_cannot_be_written_is_not_an_internal_error(
    argv, stderr, database, tmp_path
):
    project = _project(tmp_path)
    if stderr == "/dev/full":
        err = os.open("/dev/full", os.O_WRONLY)
    else:
        read_end, err = os.pipe()
        os.close(read_end)
    try:
        proc = subprocess.run(
            command(*argv),
            env=runner_env(database, project),
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=120,
            cwd=project.root,
        )
    finally:
        os.close(err)
    # promise 4: the environment took the log stream away; not a bug of the runner (exit 1)
    assert proc.returncode not in (1,), proc.stdout
    assert proc.returncode in (0, 141), proc.returncode


# --- 3. stdout on a full disk is reported as "its reader went away" --------------------------


def test_a_full_stdout_is_not_reported_as_a_reader_gone(database, tmp_path):
    project = _project(tmp_path)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        proc = subprocess.run(
            command("upgrade"),
            env=runner_env(database, project),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=project.root,
        )
    finally:
        os.close(full)
    error = next(line for line in proc.stderr.splitlines() if '"event": "error"' in line)
    # promise 6: what it reports is what happened: nobody went away, no SIGPIPE came, the
    # device is full (today: "stdout was closed (its reader went away)", "signal": "SIGPIPE")
    assert "reader went away" not in error and '"SIGPIPE"' not in error, error


# --- 4. a usage error of a command that prints a result puts the log on stdout --------------


@pytest.mark.parametrize("argv", [("current", "--json", "--bogus"), ("sql", "--json")])
def test_a_usage_error_of_a_reader_logs_on_stderr(argv, database, tmp_path):
    project = _project(tmp_path)
    result = run(runner_env(database, project), *argv, cwd=project.root)
    assert result.code == 2
    # promise 2: stdout carries only the command's output (here none), the log on stderr
    assert '"event"' not in result.stdout, result.stdout
    observed = Observed(argv[0], result.code, result.stdout, result.stderr, "stderr")
    assert violations(observed) == []


# --- 5. a role whose search_path names no schema: "public does not exist" -------------------


@pytest.mark.parametrize("search_path", ["''", "nowhere"])
def test_an_empty_search_path_is_not_reported_as_a_missing_public_schema(
    search_path, database, tmp_path
):
    project = _project(tmp_path)
    with database.admin() as admin:
        admin.execute(
            f'ALTER ROLE "{database.server.user}" IN DATABASE "{database.name}" '
            f"SET search_path = {search_path}"
        )
    result = run(runner_env(database, project), "upgrade", cwd=project.root)
    error = result.event("error")
    assert result.code == 2, result.stdout
    # promise 6: public exists and MIGRATION_VERSION_TABLE_SCHEMA is not set: the error
    # must name what is wrong (the role's search_path), not a schema that is there
    assert database.query("SELECT to_regnamespace('public') IS NOT NULL")[0][0]
    assert "'public' (MIGRATION_VERSION_TABLE_SCHEMA) does not exist" not in error["message"]
    assert "search_path" in error["message"], error["message"]


# --- 6. what a revision writes below Python's sys.stdout reaches stdout raw -----------------

SHELLS_OUT = """
import os, subprocess
subprocess.run(["echo", "from-a-subprocess"], check=True)
os.write(1, b"raw-fd-1-write\\n")
subprocess.run(["sh", "-c", "echo url=$DATABASE_URL"], check=True)
op.execute('CREATE TABLE t_a2 (id int)')
"""


@pytest.mark.parametrize(
    "argv",
    [("upgrade",), ("upgrade", "--dry-run", "--json"), ("verify", "--json")],
    ids=["upgrade", "dry-run", "verify"],
)
def test_what_a_revision_writes_through_a_subprocess_becomes_events(
    argv, database, server, tmp_path
):
    from tests.support.helpers import new_database

    project = _project(tmp_path)
    project.revision("a2", "a1", SHELLS_OUT, "op.execute('DROP TABLE t_a2')")
    project.revision(
        "a1", None, "op.execute('CREATE TABLE t_a1 (id int)')", "op.execute('DROP TABLE t_a1')"
    )
    with new_database(server) as scratch:
        extra = ("--database-url", scratch.url()) if argv[0] == "verify" else ()
        result = run(runner_env(database, project), *argv, *extra, cwd=project.root)
    writer = "--dry-run" not in argv and argv[0] == "upgrade"
    observed = Observed(
        argv[0],
        result.code,
        result.stdout,
        result.stderr,
        "stdout" if writer else "stderr",
        json_document="--json" in argv,
    )
    # promise 2 (raw lines on stdout, or no longer one JSON document) and promise 3 (the
    # DATABASE_URL's password, which a Python print() would have had masked)
    assert violations(observed, secrets=[scratch.server.password]) == [], result.stdout


# --- 7. a signal disposition the project sets at import replaces the runner's ---------------

SLEEPS = """
import os, pathlib
pathlib.Path(os.environ["MARKER"]).touch()
op.execute("SELECT pg_sleep(30)")
"""


@pytest.mark.parametrize(
    ("sig", "disposition"),
    [("SIGTERM", "signal.SIG_DFL"), ("SIGINT", "signal.default_int_handler")],
)
def test_a_signal_handler_the_project_installs_does_not_defeat_the_runners(
    sig, disposition, database, tmp_path
):
    import signal
    import time

    project = _project(tmp_path)
    env_py = project.root / "migrations" / "env.py"
    # as an app package env.py imports for its models might do (graceful-shutdown hooks)
    env_py.write_text(
        f"import signal\nsignal.signal(signal.{sig}, {disposition})\n" + env_py.read_text()
    )
    project.revision("a2", "a1", SLEEPS)
    marker = tmp_path / "in-revision"
    proc = subprocess.Popen(
        command("upgrade"),
        env=runner_env(database, project, MARKER=str(marker)),
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.Signals[sig])
    stdout, stderr = proc.communicate(timeout=60)
    observed = Observed(
        "upgrade", proc.returncode, stdout, stderr, "stdout", signal=sig, chain=("a1", "a2")
    )
    # promise 5: a summary, exit 130, the revision rolled back and the lock released (today
    # SIGTERM kills the process, -15, and the lock stays with the still-sleeping backend;
    # SIGINT is reported as the revision ending the process itself, exit 6)
    assert violations(observed) == [], stdout + stderr
    assert database.advisory_locks() == 0


# --- 8. env.py migrating inside its own engine.begin(): refused, "alembic fails the same" -----

OUTER_TRANSACTION_ENV = """
from alembic import context
from sqlalchemy import create_engine, pool
from runner.config.settings import load_settings

url = load_settings().connection_spec().url(hide_password=False)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.begin() as connection:  # env.py's own connection, in one outer transaction
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


def test_an_env_py_in_its_own_outer_transaction_migrates_as_plain_alembic_does(database, tmp_path):
    import sys

    project = _project(tmp_path)
    (project.root / "migrations" / "env.py").write_text(OUTER_TRANSACTION_ENV)
    env = runner_env(database, project)
    plain = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        env=env,
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0 and database.version() == ["a1"], plain.stderr  # Alembic can
    with database.admin() as admin:
        admin.execute("DROP TABLE alembic_version, t_a1")
    result = run(env, "upgrade", cwd=project.root)
    # promise 6: today exit 7, env_py_failed, "can't change 'autocommit' now ... plain
    # `alembic upgrade` fails the same way" -- it does not
    assert result.code == 0, result.stdout
    assert database.version() == ["a1"]


def test_a_failure_in_env_pys_outer_transaction_names_the_revision_and_what_rolled_back(
    database, tmp_path
):
    """One transaction for every revision (env.py's own): the failed revision is the one in
    flight, not the first of the run, and those before it did not stay applied."""
    project = _project(tmp_path)
    (project.root / "migrations" / "env.py").write_text(OUTER_TRANSACTION_ENV)
    project.revision("a2", "a1", "op.execute('CREATE TABLE t_a2 (id int)')")
    project.revision("a3", "a2", "op.execute('SELECT * FROM no_such_table')")
    result = run(runner_env(database, project), "upgrade", cwd=project.root)
    error, summary = result.event("error"), result.event("summary")
    assert result.code == 6 and error["revision"] == "a3", result.stdout
    assert "stay applied" not in error["message"] and "(a1, a2:" in error["message"]
    assert summary["applied"] == [] and database.version() == []


# --- 9. revision --autogenerate refused by Alembic (a CommandError): "internal error" ---------


@pytest.mark.parametrize("state", ["database behind", "no target_metadata", "several heads"])
def test_autogenerate_refused_by_alembic_is_not_an_internal_error(state, database, tmp_path):
    project = _project(tmp_path)  # env.py: target_metadata=None, as Alembic's templates ship
    env = runner_env(database, project)
    if state == "no target_metadata":
        assert run(env, "upgrade").code == 0  # at head: Alembic's next complaint is the metadata
    if state == "several heads":  # plain `revision`, no database: "Multiple heads are present"
        project.revision("b1", None, "op.execute('CREATE TABLE t_b1 (id int)')")
        result = run(env, "revision", "-m", "x")
    else:
        result = run(env, "revision", "--autogenerate", "-m", "x")
    observed = Observed("revision", result.code, result.stdout, result.stderr, "stderr")
    # promise 4: Alembic's CommandError ("Target database is not up to date.", "... does not
    # provide a MetaData object ...") names the user's or the project's mistake, not a bug
    assert violations(observed) == [], result.stderr
    assert result.code in (2, 7), result.stderr


# --- low: a role's statement_timeout, a failed stamp, a dry run on a database ahead ---------


def test_a_roles_statement_timeout_is_named_not_the_runners_setting(database, tmp_path):
    """env.py's first statements run under the role's statement_timeout (the runner sets its
    own for revisions): a cancel there is the role's setting, before any revision."""
    project = _project(tmp_path)
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "context.configure(",
            "connection.exec_driver_sql('SELECT pg_sleep(1)')\n    context.configure(",
            1,
        )
    )
    with database.admin() as admin:
        admin.execute(
            f'ALTER ROLE "{database.server.user}" IN DATABASE "{database.name}" '
            "SET statement_timeout = '200ms'"
        )
    result = run(runner_env(database, project), "upgrade", cwd=project.root)
    error = result.event("error")
    assert result.code == 6 and error["revision"] is None, result.stdout
    assert "MIGRATION_STATEMENT_TIMEOUT" not in error["message"], error["message"]
    assert "statement_timeout, 200ms" in error["message"], error["message"]


def test_a_failed_stamp_is_not_called_an_upgrade(database, tmp_path):
    project = _project(tmp_path)
    with database.connect() as conn:  # a version table that refuses what stamp writes
        conn.execute(
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY "
            "CHECK (version_num = 'other'))"
        )
    result = run(runner_env(database, project), "stamp", "heads", cwd=project.root)
    error = result.event("error")
    assert result.code == 6, result.stdout
    assert "upgrade" not in error["message"] and "Fix the migration" not in error["message"]
    assert error["message"].startswith("the stamp failed"), error["message"]


def test_a_dry_run_on_a_database_ahead_prints_its_json_document(database, tmp_path):
    import json

    project = _project(tmp_path)
    with database.connect() as conn:  # at a revision these scripts do not know
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('zz9')")
    result = run(runner_env(database, project), "upgrade", "--dry-run", "--json", cwd=project.root)
    observed = Observed(
        "upgrade", result.code, result.stdout, result.stderr, "stderr", json_document=True
    )
    assert result.code == 8 and violations(observed) == [], result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["ahead"] is True and document["pending"] == []
    assert document["from_revision"] == ["zz9"]
