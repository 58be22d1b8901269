"""A bug in the runner's own code, surfacing inside a hook Alembic or SQLAlchemy calls while a
revision runs, is an internal error (exit 1), never "the migration failed, fix it" (exit 6)."""

from __future__ import annotations

from runner.errors import ExitCode
from tests.support.helpers import PASSWORD, run, runner_env

# Loaded by every Python process that has this directory on PYTHONPATH: the runner's
# before_cursor_execute listeners are wrapped by a function compiled as if it were in the
# runner's own file, which raises on one statement: to the runner, its own bug.
INJECT = """
import sqlalchemy.event
import sqlalchemy.event.api

_listen = sqlalchemy.event.api.listen


def listen(target, identifier, fn, *args, **kw):
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None)
    if identifier == "before_cursor_execute" and code and "/runner/" in code.co_filename:
        scope = {"fn": fn}
        exec(compile("def hook(conn, cursor, statement, *rest):\\n"
                     "    if 'broken_by_the_runner' in statement:\\n"
                     "        raise KeyError('injected runner bug')\\n"
                     "    return fn(conn, cursor, statement, *rest)\\n", code.co_filename, "exec"), scope)
        fn = scope["hook"]
    return _listen(target, identifier, fn, *args, **kw)


sqlalchemy.event.api.listen = sqlalchemy.event.listen = listen
"""


def test_runner_bug_inside_a_hook_is_an_internal_error(database, project, tmp_path):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    project.audited_chain(["h1"])
    project.revision("h2", "h1", "op.execute('CREATE TABLE broken_by_the_runner (x int)')")
    result = run(runner_env(database, project, PYTHONPATH=str(inject)))

    assert result.code == ExitCode.INTERNAL, result.stdout + result.stderr
    error = result.event("error")
    assert error["error_code"] == "internal"
    assert "KeyError" in error["message"] and "report" in error["message"]
    assert database.version() == ["h1"] and not database.table_exists("broken_by_the_runner")
    result.assert_clean()  # no traceback at the default level

    debug = run(runner_env(database, project, PYTHONPATH=str(inject), MIGRATION_LOG_LEVEL="debug"))
    assert debug.code == ExitCode.INTERNAL
    (traceback,) = [e["exception"] for e in debug.events if "exception" in e]
    assert "KeyError: 'injected runner bug'" in traceback and PASSWORD not in debug.stdout


def test_revision_raising_the_same_error_is_a_failed_migration(database, project):
    """The control: the same exception from the revision's own code is the migration's."""
    project.audited_chain(["h1"])
    project.revision("h2", "h1", "raise KeyError('a bug in the revision')")
    result = run(runner_env(database, project))

    assert result.code == ExitCode.MIGRATION_FAILED, result.stdout
    assert result.event("error")["revision"] == "h2"
    result.assert_clean()
