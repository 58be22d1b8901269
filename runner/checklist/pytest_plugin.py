"""migration-runner's pytest plugin (the ``pytest11`` entry point): ``verify``'s checks as
tests, and the ``migration_runner`` fixture for tests of one revision's data.

Inert until asked: without ``--verify-migrations`` (or ``verify_migrations = true`` in the
pytest configuration) no test is added, and the fixture costs nothing until a test uses it.
Importing this module imports neither Alembic, SQLAlchemy nor a driver (pytest loads every
installed plugin at start-up), and the runner itself never imports it.

Configuration (pytest ini options; the command-line flag wins):

``migration_runner_alembic_config``
    the project's alembic.ini, relative to pytest's rootdir (default ``alembic.ini``).
``migration_runner_database_url`` / ``--migration-runner-database-url``
    a server to work on (a SQLAlchemy URL; its role needs CREATEDB for the fixture, and its
    database must be empty for the checks). Default: a throwaway PostgreSQL of the
    session's own, as ``migration-runner verify`` starts.
``migration_runner_verify_skip``
    checks not to add (``heads steps data models lint``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHECKS = ("heads", "steps", "data", "models", "lint")  # runner.checklist.verify.CHECKS
_STATE = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("migration-runner")
    group.addoption(
        "--verify-migrations",
        action="store_true",
        default=None,
        help="add migration-runner verify's checks as tests",
    )
    group.addoption(
        "--migration-runner-database-url",
        default=None,
        help="a PostgreSQL server for the checks and the migration_runner fixture "
        "(default: a throwaway one)",
    )
    parser.addini("verify_migrations", "add verify's checks as tests", type="bool", default=False)
    parser.addini(
        "migration_runner_alembic_config", "the project's alembic.ini", default="alembic.ini"
    )
    parser.addini("migration_runner_database_url", "a PostgreSQL server to work on", default="")
    parser.addini("migration_runner_verify_skip", "checks not to add", type="args", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append one test per check, so that ``-k``, ``--deselect`` and reports treat them as
    any other test."""
    enabled = config.getoption("verify_migrations") or config.getini("verify_migrations")
    if not enabled:
        return
    skip = set(config.getini("migration_runner_verify_skip"))
    unknown = skip - set(CHECKS)
    if unknown:
        raise pytest.UsageError(
            f"migration_runner_verify_skip: unknown check(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(CHECKS)})"
        )
    parent = VerifyChecks.from_parent(
        session, name="migration-runner verify", path=_ini(config), nodeid="migration-runner verify"
    )
    items.extend(
        VerifyCheck.from_parent(parent, name=check) for check in CHECKS if check not in skip
    )


class VerifyChecks(pytest.Collector):
    """The checks' parent node (``migration-runner verify::steps`` ...)."""

    def collect(self) -> list[pytest.Item]:  # the items are added by the hook above
        return []


class VerifyFailed(Exception):
    """A check failed: the message is verify's own lines for it."""


class VerifyCheck(pytest.Item):
    """One of verify's checks. The walk runs once per session (the first check to need it
    runs it), ``lint`` apart from it (offline); each test then reports its check."""

    def runtest(self) -> None:
        from runner.checklist import render

        result = _result(self.config, "lint" if self.name == "lint" else "walk")
        check = result.checks[self.name]
        if check.status == "skipped":
            pytest.skip("; ".join(check.notes) or "skipped")
        if check.status in ("failed", "incomplete"):
            lines = [
                render.failure_line(f)
                for f in result.failures
                if f.check == self.name or f.check == "upgrade"
            ]
            if check.notes:
                lines.append(f"notes: {'; '.join(check.notes)}")
            raise VerifyFailed("\n".join(lines))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from runner.errors import ConfigError

        if isinstance(excinfo.value, (VerifyFailed, ConfigError)):  # the message, no frames
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"migration-runner verify: {self.name}"


def _ini(config: pytest.Config) -> Path:
    return Path(config.rootpath) / str(config.getini("migration_runner_alembic_config"))


def _url(config: pytest.Config) -> str | None:
    return (
        config.getoption("migration_runner_database_url")
        or config.getini("migration_runner_database_url")
        or None
    )


def _loaded(config: pytest.Config) -> Any:
    from runner.scripts.load import load

    state = config.stash[_STATE]
    if "loaded" not in state:
        state["loaded"] = load(_ini(config))
    return state["loaded"]


def _server(config: pytest.Config) -> Any:
    """The session's server (a ConnectionSpec with a role that may create databases):
    the configured URL's, or a throwaway one, stopped when the session ends."""
    from runner.checklist.scratch import throwaway_database
    from runner.config.database_url import parse_database_url

    state = config.stash[_STATE]
    if "server" not in state:
        url = _url(config)
        if url:
            state["server"] = parse_database_url(url)
        else:
            stack = contextlib.ExitStack()
            config.add_cleanup(stack.close)
            state["server"] = stack.enter_context(throwaway_database())
    return state["server"]


def _result(config: pytest.Config, part: str) -> Any:
    """verify's result for ``part`` (``walk``: heads, steps, data, models, on a fresh
    database; ``lint``: offline), run once; what it raised, raised again for each check."""
    state = config.stash[_STATE]
    if part not in state:
        try:
            state[part] = _run_part(config, part)
        except Exception as exc:  # a ConfigError, or what the project raised: every check's
            state[part] = exc
    if isinstance(state[part], Exception):
        raise state[part]
    return state[part]


def _run_part(config: pytest.Config, part: str) -> Any:
    from runner.checklist.lint import run_lint
    from runner.checklist.migration_steps import fresh_database
    from runner.checklist.verify import run_verify

    loaded = _loaded(config)
    if part == "lint":
        return run_verify(
            loaded,
            None,
            skip=frozenset(CHECKS) - {"lint"},
            lint=lambda lo, since: run_lint(lo, since=since),
        )
    with fresh_database(_server(config)) as spec:
        return run_verify(loaded, spec, skip=frozenset({"lint"}))


@pytest.fixture
def migration_runner(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh, empty database and the project's migrations, as a
    :class:`runner.checklist.migration_steps.MigrationSteps`: ``upgrade(target)``,
    ``downgrade(target)``, ``insert(table, rows)``, ``query(sql, params)``, ``current()``,
    ``connection`` (psycopg, autocommit)."""
    from runner.checklist.migration_steps import fresh_database, migration_steps

    config = request.config
    with fresh_database(_server(config)) as spec, migration_steps(_loaded(config), spec) as steps:
        yield steps
