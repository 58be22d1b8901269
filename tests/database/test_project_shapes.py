"""The shapes real projects' migrations take beyond Alembic's templates (issue 22): several
version directories, labelled branches and their targets, an env.py that calls ``.connect()`` on
what it is given, a project bootstrap, an env.py that needs an AnyIO worker thread, a project
without alembic.ini (devtools/shapes.py). Each project is migrated by plain Alembic (or,
where plain Alembic cannot, the project's own migrate script) into a reference database; then
ten runners at once apply each revision once, the schema equals the reference's, and a second
run does nothing."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from devtools.shapes import SHAPES, Shape, anyio_env, connectable_env, expand_contract, table
from runner.errors import ExitCode
from tests.support.helpers import ROOT, Database, Result, Running, new_database, run, runner_env
from tests.support.projects import GeneratedProject, alembic, driver_url, schema


@pytest.fixture
def reference(database: Database) -> Database:
    """A second database on the same server, for plain Alembic's run."""
    with new_database(database.server) as db:
        yield db


def _env(url: str, **settings: object) -> dict[str, str]:
    """The runner as a team starts it from the project's directory."""
    return runner_env(None, None, DATABASE_URL=url, **settings)


def plain(shape: Shape, url: str) -> None:
    """Migrate with plain Alembic, or the project's own migrate script, to ``url``."""
    proc = subprocess.run(
        shape.plain,
        cwd=shape.project.root,
        env=shape.plain_env(url, runner_env(None)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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


@pytest.mark.parametrize("name", list(SHAPES))
def test_shape_migrates_with_ten_runners_at_once_like_plain_alembic(
    name, database, reference, tmp_path
):
    shape = SHAPES[name](tmp_path / name, driver_url(reference, "psycopg"))
    plain(shape, driver_url(reference, "psycopg"))
    env = _env(driver_url(database, "psycopg"), **shape.settings)

    results = like_alembic(database, reference, env, shape.project.root, shape.revisions)
    (migrated,) = [r for r in results if r.summary["outcome"] == "migrated"]
    if name == "connect_on_given_connection":  # the locked session itself, lent to env.py
        assert migrated.event("migrate.mode")["mode"] == "locked_connection"


# --- 1. several version directories ------------------------------------------------------


# --- 2. labelled branches and their targets ----------------------------------------------


def test_labelled_branches_refuse_head_naming_heads(tmp_path):
    shape = expand_contract(tmp_path / "p", "postgresql://x@127.0.0.1:1/x")
    refused = run(_env("postgresql+psycopg://u:pw@127.0.0.1:1/db"), cwd=shape.project.root)
    assert refused.code == ExitCode.SCRIPTS_INVALID, refused.stdout
    message = refused.event("error")["message"]
    assert "MIGRATION_TARGET=heads" in message and "MIGRATION_TARGET=" in message
    assert "merge" not in message
    refused.assert_clean()


def test_labelled_branches_upgrade_branch_by_branch(database, reference, tmp_path):
    """`expand@+1` (one runner: a relative target counts from where the database is when the
    runner first reads it), then herds to `expand@head` and `contract@head`: at each step the
    database is where plain Alembic's is with the same target."""
    project = expand_contract(tmp_path / "p", driver_url(reference, "psycopg")).project
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
    project.revision("a", "root", table("a"))
    project.revision("b1", "left", table("b1"), "--head", "a")
    project.revision("b2", "right", table("b2"), "--head", "a", "--splice")
    alembic(project.root, "merge", "--rev-id", "m", "-m", "merge", "b1", "b2")
    project.revision("c", "after", table("c"), "--head", "m")
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


# --- an env.py that calls .connect() on what it is given, on a connection of its own ------


def test_env_py_calling_connect_on_a_psycopg2_connection(database, reference, tmp_path):
    """psycopg2: env.py gets a connection of that driver, the lock held alongside and guarded."""
    shape = connectable_env(tmp_path / "p", driver_url(reference, "psycopg2"))
    plain(shape, driver_url(reference, "psycopg2"))
    env = _env(driver_url(database, "psycopg2"))
    results = like_alembic(database, reference, env, shape.project.root, shape.revisions)
    (migrated,) = [r for r in results if r.summary["outcome"] == "migrated"]
    assert migrated.event("migrate.mode")["mode"] == "separate_connection"


# --- what plain Alembic cannot do: a bootstrap, an AnyIO worker thread ---------------------


def test_without_its_bootstrap_the_project_fails_in_env_py(database, tmp_path):
    shape = SHAPES["bootstrap"](tmp_path / "p", driver_url(database, "psycopg"))
    result = run(_env(driver_url(database, "psycopg")), cwd=shape.project.root)
    assert result.code == ExitCode.SCRIPTS_INVALID, result.stdout
    assert "configure() must be called" in result.event("error")["message"]
    assert database.version() == []


def test_env_py_that_needs_an_anyio_worker_thread_on_asyncpg(database, reference, tmp_path):
    shape = anyio_env(tmp_path / "p", driver_url(reference, "asyncpg"), template="async")
    plain(shape, driver_url(reference, "asyncpg"))
    url = driver_url(database, "asyncpg")

    refused = run(_env(url), cwd=shape.project.root)  # in the main thread, as plain Alembic
    assert refused.code == ExitCode.SCRIPTS_INVALID, refused.stdout
    assert "env.py" in refused.event("error")["message"]
    like_alembic(
        database, reference, _env(url, **shape.settings), shape.project.root, shape.revisions
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
    (project.root / "boot.py").write_text(
        "def fails():\n    raise ValueError('no config')\n"
        "def exits():\n    raise SystemExit(3)\n"
        "def interrupts():\n    raise KeyboardInterrupt\n"
    )
    for spec, says in (
        ("nowhere_module_x:configure", "no module named 'nowhere_module_x'"),
        ("boot:missing", "has no missing"),
        ("boot:fails", "ValueError: no config"),
        ("boot:exits", "SystemExit: 3"),  # the project's, never "internal error"
        ("boot:interrupts", "KeyboardInterrupt"),
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


# --- a project without alembic.ini, not told where its scripts are -------------------------


def test_project_without_alembic_ini_names_the_setting(tmp_path):
    shape = SHAPES["without_alembic_ini"](tmp_path / "p", "postgresql://x@127.0.0.1:1/x")
    result = run(_env("postgresql+psycopg://u:pw@127.0.0.1:1/db"), cwd=shape.project.root)
    assert result.code == ExitCode.CONFIG, result.stdout
    assert "MIGRATION_SCRIPT_LOCATION" in result.event("error")["message"]
    assert not [e for e in result.events if e["event"].startswith("db.")]
    result.assert_clean()


# --- the env.py docs/project-shapes.md recommends ------------------------------------------


def everywhere_env_py() -> str:
    """The env.py of docs/project-shapes.md, as printed there."""
    text = (ROOT / "docs" / "project-shapes.md").read_text()
    section = text.split("## The env.py that works everywhere", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize(
    ("driver", "mode"), [("psycopg", "locked_connection"), ("asyncpg", "separate_connection")]
)
def test_the_env_py_that_works_everywhere(driver, mode, database, reference, tmp_path):
    project = GeneratedProject(tmp_path / "p", "generic", driver_url(reference, driver))
    project.env_py.write_text(everywhere_env_py())
    revisions = project.audited_revisions()
    alembic(project.root, "upgrade", "head")
    offline = alembic(project.root, "upgrade", "head", "--sql")
    assert "CREATE TABLE items" in offline.stdout

    env = _env(driver_url(database, driver))
    results = like_alembic(database, reference, env, project.root, revisions)
    (migrated,) = [r for r in results if r.summary["outcome"] == "migrated"]
    assert migrated.event("migrate.mode")["mode"] == mode


def test_verify_runs_env_py_where_the_setting_says(database, reference, tmp_path):
    """`verify` runs env.py for each revision, in the AnyIO worker thread too (the generated
    revisions have empty downgrades: the steps check is skipped)."""
    shape = anyio_env(tmp_path / "p", driver_url(database, "psycopg"))
    args = ("verify", "--skip", "steps", "--database-url", database.url())
    url = driver_url(database, "psycopg")
    passed = run(_env(url, **shape.settings), *args, timeout=180, cwd=shape.project.root)
    assert passed.code == 0, passed.stdout + passed.stderr
    args = ("verify", "--skip", "steps", "--database-url", reference.url())  # empty again
    refused = run(_env(url), *args, timeout=180, cwd=shape.project.root)  # in the main thread
    assert refused.code != 0 and "AnyIO worker thread" in refused.stderr, refused.stderr
