"""The shapes real projects' migrations take beyond Alembic's templates (issue 22): several
version directories, labelled branches and their targets, an env.py that calls ``.connect()`` on
what it is given, a project bootstrap, an env.py that needs an AnyIO worker thread, a project
without alembic.ini. Each project is generated here and migrated by plain Alembic (or, where
plain Alembic cannot, the project's own migrate script) into a reference database; then ten
runners at once apply each revision once, the schema equals the reference's, and a second run
does nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from runner.errors import ExitCode
from tests.support.helpers import Database, Result, Running, new_database, run, runner_env
from tests.support.projects import GeneratedProject, alembic, driver_url, schema


@pytest.fixture
def reference(database: Database) -> Database:
    """A second database on the same server, for plain Alembic's run."""
    with new_database(database.server) as db:
        yield db


def _env(url: str, **settings: object) -> dict[str, str]:
    """The runner as a team starts it from the project's directory."""
    return runner_env(None, None, DATABASE_URL=url, **settings)


def herd(env: dict[str, str], cwd: Path, revisions: list[str], n: int = 10) -> list[Result]:
    """``n`` runners at once: all succeed, and each of ``revisions`` is applied exactly once."""
    results = [p.finish(timeout=180) for p in [Running(env, cwd=cwd) for _ in range(n)]]
    failed = [r.stdout + r.stderr for r in results if r.code != 0]
    assert [r.code for r in results] == [0] * n, failed[:1]
    applied = Counter(
        e["revision"] for r in results for e in r.events if e["event"] == "revision.applied"
    )
    assert applied == dict.fromkeys(revisions, 1)
    for result in results:
        result.assert_clean()
    return results


def like_alembic(
    database: Database, reference: Database, env: dict[str, str], cwd: Path, revisions: list[str]
) -> list[Result]:
    """A herd, then the database equals plain Alembic's and a second run is a no-op."""
    results = herd(env, cwd, revisions)
    assert database.version() == reference.version() != []
    assert schema(database) == schema(reference)
    again = run(env, cwd=cwd)
    assert again.code == 0 and again.summary["outcome"] == "up_to_date", again.stdout
    return results


def _table(name: str) -> str:
    return f'op.create_table("{name}", sa.Column("id", sa.Integer, primary_key=True))'


# --- 1. several version directories ------------------------------------------------------


def test_two_version_directories(database, reference, tmp_path):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, "psycopg"))
    (project.root / "migrations" / "more").mkdir()
    project.set_option(
        "version_locations", f"%(here)s/migrations/versions{os.pathsep}%(here)s/migrations/more"
    )
    project.revision("a1", "first", _table("t1"), "--version-path", "migrations/versions")
    project.revision("a2", "second", _table("t2"), "--version-path", "migrations/more")
    project.revision("a3", "third", _table("t3"), "--version-path", "migrations/versions")
    alembic(project.root, "upgrade", "head")

    like_alembic(
        database, reference, _env(driver_url(database, "psycopg")), project.root, ["a1", "a2", "a3"]
    )


def test_recursive_version_directories(database, reference, tmp_path):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, "psycopg"))
    project.set_option("recursive_version_locations", "true")
    for rev, year in (("a1", "2024"), ("a2", "2025"), ("a3", "2025")):
        path = project.revision(rev, f"in {year}", _table(f"t_{rev}"))
        (project.versions / year).mkdir(exist_ok=True)
        path.rename(project.versions / year / path.name)  # filed by year, as teams do
    alembic(project.root, "upgrade", "head")

    like_alembic(
        database, reference, _env(driver_url(database, "psycopg")), project.root, ["a1", "a2", "a3"]
    )


# --- 2. labelled branches and their targets ----------------------------------------------


def _expand_contract(root: Path, url: str) -> GeneratedProject:
    """Two branches by design, each from its own base: ``expand`` (e1, e2), ``contract`` (c1)."""
    project = GeneratedProject(root, "generic", url)
    project.revision("e1", "expand one", _table("e1"), "--head", "base", "--branch-label", "expand")
    project.revision("e2", "expand two", _table("e2"), "--head", "expand@head")
    project.revision(
        "c1", "contract one", _table("c1"), "--head", "base", "--branch-label", "contract"
    )
    return project


def test_labelled_branches_upgrade_to_heads(database, reference, tmp_path):
    project = _expand_contract(tmp_path / "p", driver_url(reference, "psycopg"))
    alembic(project.root, "upgrade", "heads")
    url = driver_url(database, "psycopg")

    refused = run(_env(url), cwd=project.root)  # the default target, head, is ambiguous
    assert refused.code == ExitCode.SCRIPTS_INVALID, refused.stdout
    assert "MIGRATION_TARGET=heads" in refused.event("error")["message"]
    assert "merge" not in refused.event("error")["message"]

    like_alembic(
        database, reference, _env(url, MIGRATION_TARGET="heads"), project.root, ["e1", "e2", "c1"]
    )


def test_labelled_branches_upgrade_branch_by_branch(database, reference, tmp_path):
    """`expand@+1` (one runner: a relative target counts from where the database is when the
    runner first reads it), then herds to `expand@head` and `contract@head`: at each step the
    database is where plain Alembic's is with the same target."""
    project = _expand_contract(tmp_path / "p", driver_url(reference, "psycopg"))
    url = driver_url(database, "psycopg")
    alembic(project.root, "upgrade", "expand@+1")
    one = run(_env(url, MIGRATION_TARGET="expand@+1"), cwd=project.root)
    assert one.code == 0 and one.summary["applied"] == ["e1"], one.stdout
    assert database.version() == reference.version() == ["e1"]
    for target, revisions in (("expand@head", ["e2"]), ("contract@head", ["c1"])):
        alembic(project.root, "upgrade", target)
        herd(_env(url, MIGRATION_TARGET=target), project.root, revisions)
        assert database.version() == reference.version()
    assert schema(database) == schema(reference)
    again = run(_env(url, MIGRATION_TARGET="contract@head"), cwd=project.root)
    assert again.code == 0 and again.summary["outcome"] == "up_to_date", again.stdout


def test_downgrade_into_a_branch_of_a_merge_does_what_alembic_does(database, reference, tmp_path):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, "psycopg"))
    project.revision("a", "root", _table("a"))
    project.revision("b1", "left", _table("b1"), "--head", "a")
    project.revision("b2", "right", _table("b2"), "--head", "a", "--splice")
    alembic(project.root, "merge", "--rev-id", "m", "-m", "merge", "b1", "b2")
    project.revision("c", "after", _table("c"), "--head", "m")
    env = _env(driver_url(database, "psycopg"))
    alembic(project.root, "upgrade", "head")
    assert run(env, cwd=project.root).code == 0
    alembic(project.root, "downgrade", "b1")

    down = run(env, "downgrade", "b1", cwd=project.root)
    assert down.code == 0, down.stdout
    assert [e["revision"] for e in down.events if e["event"] == "revision.reverted"] == ["c", "m"]
    assert database.version() == reference.version() == ["b1", "b2"]
    assert schema(database) == schema(reference)

    ledger_rows = database.query("SELECT count(*) FROM migration_runner_ledger")
    refused = run(env, "downgrade", "c", cwd=project.root)  # not applied: Alembic refuses too
    assert refused.code == ExitCode.CONFIG, refused.stdout
    assert "not applied" in refused.event("error")["message"]
    assert database.version() == ["b1", "b2"]
    assert database.query("SELECT count(*) FROM migration_runner_ledger") == ledger_rows
    for result in (down, refused):
        result.assert_clean()


# --- 3. an env.py that calls .connect() on what it is given ------------------------------

# the cookbook's older form: the given connection used as a connectable
CONNECTABLE_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config

connectable = config.attributes.get("connection", None)
if connectable is None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.mark.parametrize(
    ("driver", "mode"), [("psycopg", "locked_connection"), ("psycopg2", "separate_connection")]
)
def test_env_py_calling_connect_on_the_given_connection(
    driver, mode, database, reference, tmp_path
):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, driver))
    project.env_py.write_text(CONNECTABLE_ENV)
    revisions = project.audited_revisions()
    alembic(project.root, "upgrade", "head")

    results = like_alembic(
        database, reference, _env(driver_url(database, driver)), project.root, revisions
    )
    (migrated,) = [r for r in results if r.summary["outcome"] == "migrated"]
    assert migrated.event("migrate.mode")["mode"] == mode


# --- 4. a project bootstrap; an env.py that needs an AnyIO worker thread -----------------

SETTINGS_MODULE = """
CONFIGURED = False


def configure():
    global CONFIGURED
    CONFIGURED = True
"""

BOOTSTRAPPED_ENV_HEAD = """
import myproject.settings

if not myproject.settings.CONFIGURED:
    raise RuntimeError("myproject.settings.configure() must be called before the migrations")
"""

PROJECT_MIGRATE = """
from alembic import command
from alembic.config import Config

import myproject.settings

myproject.settings.configure()
command.upgrade(Config("alembic.ini"), "head")
"""


def _own_migrate(root: Path, script: str) -> None:
    """The project's own migrate command (what it runs instead of plain `alembic upgrade`)."""
    (root / "own_migrate.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "own_migrate.py"],
        cwd=root,
        env=runner_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_project_bootstrap_runs_before_env_py(database, reference, tmp_path):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, "psycopg"))
    (project.root / "myproject").mkdir()
    (project.root / "myproject" / "__init__.py").write_text("")
    (project.root / "myproject" / "settings.py").write_text(SETTINGS_MODULE)
    project.env_py.write_text(BOOTSTRAPPED_ENV_HEAD + project.env_py.read_text())
    revisions = project.audited_revisions()
    _own_migrate(project.root, PROJECT_MIGRATE)
    url = driver_url(database, "psycopg")

    plain = run(_env(url), cwd=project.root)  # as plain `alembic upgrade`: env.py refuses
    assert plain.code == ExitCode.SCRIPTS_INVALID, plain.stdout
    like_alembic(
        database,
        reference,
        _env(url, MIGRATION_BOOTSTRAP="myproject.settings:configure"),
        project.root,
        revisions,
    )


ANYIO_ENV_HEAD = """
import anyio.from_thread


async def _load_settings():
    return {"ready": True}


# raises RuntimeError outside an AnyIO worker thread: the project's migrate runs env.py in one
SETTINGS = anyio.from_thread.run(_load_settings)
"""

ANYIO_MIGRATE = """
import anyio
import anyio.to_thread
from alembic import command
from alembic.config import Config

anyio.run(anyio.to_thread.run_sync, lambda: command.upgrade(Config("alembic.ini"), "head"))
"""


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_env_py_that_needs_an_anyio_worker_thread(driver, database, reference, tmp_path):
    template = "generic" if driver == "psycopg" else "async"
    project = GeneratedProject(tmp_path / "p", template, driver_url(reference, driver))
    project.env_py.write_text(ANYIO_ENV_HEAD + project.env_py.read_text())
    revisions = project.audited_revisions()
    _own_migrate(project.root, ANYIO_MIGRATE)
    url = driver_url(database, driver)

    plain = run(_env(url), cwd=project.root)
    assert plain.code == ExitCode.SCRIPTS_INVALID, plain.stdout
    assert "env.py" in plain.event("error")["message"]
    like_alembic(
        database,
        reference,
        _env(url, MIGRATION_ENV_PY_THREAD="anyio_worker"),
        project.root,
        revisions,
    )


def test_bootstrap_and_env_py_thread_settings_are_validated_at_start(project, tmp_path):
    nowhere = "postgresql+psycopg://u:pw@127.0.0.1:1/db"
    cases = {
        "MIGRATION_BOOTSTRAP=not a spec": {"MIGRATION_BOOTSTRAP": "not a spec"},
        "MIGRATION_ENV_PY_THREAD=fiber": {"MIGRATION_ENV_PY_THREAD": "fiber"},
    }
    for name, settings in cases.items():
        result = run(runner_env(None, project, DATABASE_URL=nowhere, **settings))
        assert result.code == ExitCode.CONFIG, (name, result.stdout)
        assert name.split("=")[0] in result.event("error")["message"]
        assert not [e for e in result.events if e["event"].startswith("db.")]
        result.assert_clean()


def test_bootstrap_that_cannot_be_found_or_fails_is_a_config_error(database, project):
    project.audited_chain(["a1"])
    (project.root / "boot.py").write_text("def fails():\n    raise ValueError('no config')\n")
    for spec, says in (
        ("nowhere_module_x:configure", "no module named 'nowhere_module_x'"),
        ("boot:missing", "has no missing"),
        ("boot:fails", "ValueError: no config"),
    ):
        result = run(
            runner_env(database, project, MIGRATION_BOOTSTRAP=spec, PYTHONPATH=str(project.root))
        )
        assert result.code == ExitCode.CONFIG, (spec, result.stdout)
        assert says in result.event("error")["message"]
        result.assert_clean()
    assert database.version() == []


# --- 5. env.py failing before any revision -----------------------------------------------


@pytest.mark.parametrize(
    ("head", "line", "error_class"),
    [
        ("raise RuntimeError('settings missing')\n", 1, "RuntimeError"),
        ("import nowhere_module_y\n", 1, "ModuleNotFoundError"),
        ("x = (\n", 1, "SyntaxError"),
    ],
)
def test_env_py_failing_before_any_revision_is_named(head, line, error_class, database, project):
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(head + env_py.read_text())
    project.audited_chain(["a1", "a2"])
    result = run(runner_env(database, project))

    assert result.code == ExitCode.SCRIPTS_INVALID, result.stdout
    error = result.event("error")
    assert error["error_code"] == "env_py_failed"
    assert f"{env_py}:{line}" in error["message"] and error["env_py"] == f"{env_py}:{line}"
    assert "No revision started" in error["message"]
    assert error["error_class"] == error_class
    assert "a1" not in error["message"]
    assert not [e for e in result.events if e["event"] == "revision.started"]
    assert database.version() == []
    result.assert_clean()


# --- 6. a project without alembic.ini ----------------------------------------------------

CODE_CONFIG_MIGRATE = """
from alembic import command
from alembic.config import Config

config = Config()
config.set_main_option("script_location", "migrations")
config.set_main_option("path_separator", "os")
config.set_main_option("version_locations", "migrations/versions:migrations/more")
config.set_main_option("sqlalchemy.url", {url!r})
command.upgrade(config, "head")
"""


def test_project_without_alembic_ini(database, reference, tmp_path):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, "psycopg"))
    (project.root / "migrations" / "more").mkdir()
    project.set_option("version_locations", "migrations/versions:migrations/more")
    project.revision("a1", "first", _table("t1"), "--version-path", "migrations/versions")
    project.revision("a2", "second", _table("t2"), "--version-path", "migrations/more")
    project.ini.unlink()  # its configuration lives in code from here on
    script = CODE_CONFIG_MIGRATE.format(url=driver_url(reference, "psycopg").replace("%", "%%"))
    _own_migrate(project.root, textwrap.dedent(script))
    url = driver_url(database, "psycopg")

    missing = run(_env(url), cwd=project.root)
    assert missing.code == ExitCode.CONFIG
    assert "MIGRATION_SCRIPT_LOCATION" in missing.event("error")["message"]
    like_alembic(
        database,
        reference,
        _env(
            url,
            MIGRATION_SCRIPT_LOCATION="migrations",
            MIGRATION_VERSION_LOCATIONS="migrations/versions migrations/more",
        ),
        project.root,
        ["a1", "a2"],
    )
