"""Real-world env.py files: the runner stays safe and observable with each style."""

from __future__ import annotations

from collections import Counter

from runner.errors import ExitCode
from tests.support.helpers import Running, run, runner_env

# The stock `alembic init` env.py: fileConfig() and its own engine from sqlalchemy.url,
# ignoring config.attributes["connection"].
STOCK_ENV = """
from logging.config import fileConfig
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                 prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

# Opens a second connection from the engine of the one it was given.
SECOND_CONNECTION_ENV = """
from alembic import context

given = context.config.attributes["connection"]
with given.engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

LOGGING_INI = """
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = PLAINTEXT %(levelname)-5.5s [%(name)s] %(message)s
"""


def _use_env(project, env_py: str) -> None:
    (project.root / "migrations" / "env.py").write_text(env_py)
    project.ini.write_text(project.ini.read_text() + LOGGING_INI)


def test_stock_env_py_runs_on_its_own_connection_with_the_lock_held_alongside(database, project):
    _use_env(project, STOCK_ENV)
    project.audited_chain(["a1", "a2", "a3"])
    env = runner_env(database, project)
    results = [p.finish() for p in [Running(env) for _ in range(6)]]

    assert [r.code for r in results] == [0] * 6, [r.stdout + r.stderr for r in results]
    assert Counter(r.summary["outcome"] for r in results) == {"migrated": 1, "up_to_date": 5}
    assert Counter(rev for (rev,) in database.query("SELECT rev FROM audit")) == {
        "a1": 1,
        "a2": 1,
        "a3": 1,
    }
    (migrated,) = [r for r in results if r.summary["outcome"] == "migrated"]
    assert migrated.event("migrate.mode")["mode"] == "separate_connection"
    # fileConfig() did not silence the runner nor send Alembic's lines to stderr as plain text
    assert any(e["event"] == "revision.started" for e in migrated.events)
    assert "PLAINTEXT" not in migrated.stderr + migrated.stdout
    assert [e["revision"] for e in migrated.events if e["event"] == "revision.applied"] == [
        "a1",
        "a2",
        "a3",
    ]
    migrated.assert_clean()


def test_env_py_opening_a_second_connection_from_the_given_one(database, project):
    _use_env(project, SECOND_CONNECTION_ENV)
    project.audited_chain(["a1", "a2"])
    result = run(runner_env(database, project))

    assert result.code == 0, result.stdout + result.stderr
    assert result.event("migrate.mode")["mode"] == "separate_connection"
    assert database.version() == ["a2"]
    result.assert_clean()


def test_psycopg2_driver_named_in_the_url_is_honoured(database, project):
    _use_env(project, STOCK_ENV)
    project.revision(
        "a1",
        None,
        "import psycopg2\n"
        "assert type(op.get_bind().connection.dbapi_connection).__module__.startswith('psycopg2')\n"
        "op.execute('CREATE TABLE made_by_psycopg2 (x int)')",
    )
    url = database.url().replace("postgresql+psycopg://", "postgresql+psycopg2://")
    result = run(runner_env(database, project, DATABASE_URL=url))

    assert result.code == 0, result.stdout + result.stderr
    assert database.table_exists("made_by_psycopg2")
    result.assert_clean()


def test_lost_lock_session_stops_the_revision_in_flight_at_once(database, project):
    """The lock session is terminated during a2 (on env.py's own connection): a2's backend is
    stopped at once and rolled back, not left to finish without the lock."""
    _use_env(project, STOCK_ENV)
    project.audited_chain(["a1"])
    project.revision(
        "a2",
        "a1",
        "op.execute('SELECT pg_sleep(1.5)')\nop.execute(\"INSERT INTO audit (rev) VALUES ('a2')\")",
    )
    project.revision("a3", "a2", "op.execute(\"INSERT INTO audit (rev) VALUES ('a3')\")")
    proc = Running(runner_env(database, project))
    lock_pid = proc.wait_for_event("db.connected")["backend_pid"]
    started = proc.wait_for_event("revision.started")
    while started["revision"] != "a2":
        started = proc.wait_for_event("revision.started")
    database.query("SELECT pg_terminate_backend(%s)", (lock_pid,))
    result = proc.finish()

    assert result.code == ExitCode.CONNECTION_LOST, result.stdout
    assert result.event("error")["revision"] == "a2"
    assert result.elapsed < 10
    assert database.version() == ["a1"]
    assert sorted(rev for (rev,) in database.query("SELECT rev FROM audit")) == ["a1"]
    result.assert_clean()


def test_env_py_with_one_transaction_for_everything_gets_its_ledger_rows_at_its_commit(
    database, project
):
    """env.py's explicit transaction_per_migration=False wins: all or nothing, ledger included."""
    from tests.support.helpers import ENV_PY

    _use_env(
        project,
        ENV_PY.replace(
            "target_metadata=None)", "target_metadata=None, transaction_per_migration=False)"
        ),
    )
    project.audited_chain(["a1", "a2"])
    project.revision("a3", "a2", "raise RuntimeError('a3 is broken')")
    env = runner_env(database, project)
    failed = run(env)
    assert failed.code == ExitCode.MIGRATION_FAILED
    assert database.query("SELECT to_regclass('alembic_version'), to_regclass('audit')") == [
        (None, None)
    ]
    assert database.query("SELECT count(*) FROM migration_runner_ledger") == [(0,)]
    assert failed.summary["applied"] == []

    project.revision("a3", "a2", "pass")
    migrated = run(env)
    assert migrated.code == 0 and migrated.summary["applied"] == ["a1", "a2", "a3"]
    assert database.query("SELECT revision, outcome FROM migration_runner_ledger ORDER BY id") == [
        ("a1", "applied"),
        ("a2", "applied"),
        ("a3", "applied"),
    ]
    assert database.query("SELECT count(*) FROM audit") == [(2,)]
