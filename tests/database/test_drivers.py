"""Each driver a project may name in its URL (psycopg 3, psycopg2, asyncpg, psycopg async): env.py
gets a connection of that driver, failures are classified by SQLSTATE whatever raised them, and
a SIGTERM stops a statement within seconds."""

from __future__ import annotations

import signal

import pytest

from runner.errors import ExitCode
from tests.support.helpers import Database, Running, run, runner_env, wait_until
from tests.support.projects import SHARED_CONNECTION_ENV, GeneratedProject, alembic, driver_url

#: what env.py's connection says it is, per driver named in the URL: (dialect.driver, is_async)
EXPECTED = {
    "psycopg": ("psycopg", False),
    "psycopg2": ("psycopg2", False),
    "asyncpg": ("asyncpg", True),
    "psycopg_async": ("psycopg", True),
}


def _project(tmp_path, database: Database, driver: str, env_py: str = "shared") -> GeneratedProject:
    """A generated project; env.py Alembic's shared-connection recipe, or the template's own
    (generic or async: it builds its own engine and ignores the runner's connection)."""
    template = "async" if EXPECTED[driver][1] else "generic"
    project = GeneratedProject(
        tmp_path / f"{driver}_{env_py}", template, driver_url(database, driver)
    )
    if env_py == "shared":
        project.env_py.write_text(SHARED_CONNECTION_ENV)
    return project


def _env(
    project: GeneratedProject, database: Database, driver: str, **settings: object
) -> dict[str, str]:
    return {
        **runner_env(None, None, DATABASE_URL=driver_url(database, driver), **settings),
        "ALEMBIC_CONFIG": str(project.ini),
    }


@pytest.mark.parametrize("driver", EXPECTED)
def test_env_py_gets_a_connection_of_the_driver_the_url_names(driver, database, tmp_path):
    project = _project(tmp_path, database, driver)
    project.revision(
        "d1",
        "record the driver",
        """
        bind = op.get_bind()
        op.execute("CREATE TABLE seen (driver text, is_async boolean)")
        op.execute(sa.text("INSERT INTO seen VALUES (:driver, :is_async)")
                   .bindparams(driver=bind.dialect.driver, is_async=bind.dialect.is_async))
    """,
    )
    project.revision("d2", "a second one", "op.execute('ALTER TABLE seen ADD COLUMN n int')")
    result = run(_env(project, database, driver))

    assert result.code == 0, result.stdout + result.stderr
    assert database.query("SELECT driver, is_async FROM seen") == [EXPECTED[driver]]
    assert database.version() == ["d2"]
    assert result.summary["applied"] == ["d1", "d2"]
    result.assert_clean()


def _client_side_parameters(project: GeneratedProject) -> None:
    """The issue's reproduction: a string literal bound into an integer column, which
    psycopg2 interpolates on the client and PostgreSQL then casts."""
    project.revision(
        "r1",
        "create t",
        """
        op.create_table("t", sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Integer))
        op.execute("INSERT INTO t (id, n) VALUES (1, 7)")
    """,
    )
    project.revision(
        "r2",
        "reset n",
        'op.execute(sa.table("t", sa.column("n")).update().values(n=sa.literal("0")))',
    )


def test_psycopg2_revision_relying_on_client_side_parameters_applies(database, tmp_path):
    project = _project(tmp_path, database, "psycopg2")
    _client_side_parameters(project)
    result = run(_env(project, database, "psycopg2"))

    assert result.code == 0, result.stdout + result.stderr
    assert database.query("SELECT n FROM t") == [(0,)]
    result.assert_clean()


def test_same_revision_under_psycopg3_fails_as_plain_alembic_does(database, tmp_path):
    """The control: the runner does not quietly swap drivers."""
    project = _project(tmp_path, database, "psycopg")
    _client_side_parameters(project)
    result = run(_env(project, database, "psycopg"))

    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    assert result.event("error")["revision"] == "r2"
    assert "DatatypeMismatch" in result.event("error")["message"]
    assert database.version() == ["r1"]


FAULT_CASES = [
    ("psycopg2", "shared"),
    ("psycopg2", "stock"),
    ("asyncpg", "shared"),
    ("asyncpg", "stock"),
]


def _at_b1_then(project: GeneratedProject, database: Database, driver: str, b2: str) -> None:
    project.revision(
        "b1", "create t", 'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))'
    )
    project.revision("b2", "the slow or blocked one", b2)
    first = run(_env(project, database, driver), "upgrade", "b1")
    assert first.code == 0, first.stdout + first.stderr


@pytest.mark.parametrize("driver,env_py", FAULT_CASES)
def test_lock_timeout_is_retried_then_names_the_blocker(driver, env_py, database, tmp_path):
    project = _project(tmp_path, database, driver, env_py)
    _at_b1_then(project, database, driver, 'op.add_column("t", sa.Column("m", sa.Integer))')
    with database.connect() as blocker:
        blocker.autocommit = False
        blocker.execute("SELECT * FROM t")  # holds ACCESS SHARE until it ends
        blocker_pid = blocker.info.backend_pid
        result = run(
            _env(
                project,
                database,
                driver,
                MIGRATION_DDL_LOCK_TIMEOUT="0.5",
                MIGRATION_DDL_LOCK_RETRIES="2",
            )
        )
        blocker.rollback()

    assert result.code == ExitCode.MIGRATION_BLOCKED, result.stdout + result.stderr
    blocked = [e for e in result.events if e["event"] == "revision.blocked"]
    assert [e["attempt"] for e in blocked] == [1, 2]
    assert blocker_pid in [b["pid"] for e in blocked for b in e["blockers"]]
    assert f"pid {blocker_pid}" in result.event("error")["message"]
    assert database.version() == ["b1"]
    result.assert_clean()
    assert run(_env(project, database, driver)).code == 0
    assert database.version() == ["b2"]


def _sleeping_backend(database: Database) -> int:
    pids: list[int] = []

    def found() -> bool:
        pids[:] = [
            pid
            for (pid,) in database.query(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'"
            )
        ]
        return bool(pids)

    wait_until(found, timeout=60, what="the revision's pg_sleep to run")
    return pids[0]


@pytest.mark.parametrize("driver,env_py", FAULT_CASES)
def test_lost_migration_connection_exits_10(driver, env_py, database, tmp_path):
    project = _project(tmp_path, database, driver, env_py)
    _at_b1_then(project, database, driver, 'op.execute("SELECT pg_sleep(60)")')
    proc = Running(_env(project, database, driver))
    mode = proc.wait_for_event("migrate.mode", timeout=60)
    pid = _sleeping_backend(database)
    assert mode["migration_backend_pid"] == pid
    database.query("SELECT pg_terminate_backend(%s)", (pid,))
    result = proc.finish()

    assert result.code == ExitCode.CONNECTION_LOST, result.stdout + result.stderr
    assert result.event("error")["revision"] == "b2"
    assert database.version() == ["b1"]
    wait_until(lambda: database.advisory_locks() == 0, what="the lock to be free")
    result.assert_clean()


@pytest.mark.parametrize("driver,env_py", FAULT_CASES)
def test_sigterm_stops_the_running_statement_within_five_seconds(
    driver, env_py, database, tmp_path
):
    project = _project(tmp_path, database, driver, env_py)
    _at_b1_then(project, database, driver, 'op.execute("SELECT pg_sleep(60)")')
    proc = Running(_env(project, database, driver))
    _sleeping_backend(database)
    sent = proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=30)

    assert result.code == ExitCode.INTERRUPTED, result.stdout + result.stderr
    assert result.elapsed - (sent - proc.started) < 5
    assert result.summary["outcome"] == "interrupted"
    assert database.version() == ["b1"]
    assert database.query(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' "
        "AND state = 'active'"
    ) == [(0,)]
    assert database.advisory_locks() == 0
    result.assert_clean()


def test_a_driver_that_is_not_installed_is_named_before_connecting(database, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()  # the interpreter is told asyncpg cannot be imported, as in an image without it
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['asyncpg'] = None\n")
    project = _project(tmp_path, database, "asyncpg")
    project.revision("d1", "first", "op.execute('CREATE TABLE t (x int)')")
    result = run({**_env(project, database, "asyncpg"), "PYTHONPATH": str(hide)})

    assert result.code == ExitCode.CONFIG, result.stdout + result.stderr
    message = result.event("error")["message"]
    assert "asyncpg" in message and "not installed" in message
    assert not [e for e in result.events if e["event"].startswith("db.")]
    result.assert_clean()


@pytest.mark.parametrize("driver,env_py", FAULT_CASES)
def test_progress_follows_the_migrating_backend_of_every_driver(driver, env_py, database, tmp_path):
    """The side watch reports the backend env.py migrates on (a connection of the URL's
    driver, or env.py's own), not the runner's locked session: its wait is the revision's."""
    project = _project(tmp_path, database, driver, env_py)
    _at_b1_then(project, database, driver, 'op.execute("SELECT pg_sleep(2.5)")')
    result = run(_env(project, database, driver, MIGRATION_PROGRESS_INTERVAL="1"))

    assert result.code == 0, result.stdout + result.stderr
    progress = [e for e in result.events if e["event"] == "revision.progress"]
    assert len(progress) >= 2, result.stdout
    assert all(e["revision"] == "b2" for e in progress)
    assert all((e["wait_event_type"], e["wait_event"]) == ("Timeout", "PgSleep") for e in progress)
    pid = result.event("migrate.mode")["migration_backend_pid"]
    assert result.event("migrate.mode")["mode"] == "separate_connection" and pid
    result.assert_clean()


def _backfill_revisions(project: GeneratedProject) -> None:
    project.revision(
        "b1",
        "a table",
        """
        op.execute("CREATE TABLE calls (id bigint PRIMARY KEY, region text)")
        op.execute("INSERT INTO calls (id) SELECT g FROM generate_series(1, 2500) g")
    """,
    )
    project.revision(
        "b2",
        "fill region",
        """
        from runner import backfill
        backfill("calls", set="region = 'eu'", where="region IS NULL", batch_size=1000)
    """,
    )


@pytest.mark.parametrize("driver", EXPECTED)
def test_a_backfill_runs_its_batches_under_every_driver(driver, database, tmp_path):
    project = _project(tmp_path, database, driver)
    _backfill_revisions(project)
    result = run(_env(project, database, driver, MIGRATION_DDL_LOCK_TIMEOUT="3"))
    result.check_log_contract()
    assert result.code == 0, result.stdout
    [record] = result.summary["backfills"]
    assert (record["rows_done"], record["batches"], record["finished"]) == (2500, 4, True)
    assert database.query("SELECT count(*) FROM calls WHERE region = 'eu'") == [(2500,)]
    assert database.version() == ["b2"]


def test_a_backfill_runs_under_plain_alembic_too(database, tmp_path):
    project = _project(tmp_path, database, "psycopg", env_py="stock")
    _backfill_revisions(project)
    alembic(project.root, "upgrade", "head")
    assert database.query("SELECT count(*) FROM calls WHERE region = 'eu'") == [(2500,)]
    assert database.version() == ["b2"]
