"""Fixtures: a real PostgreSQL per test worker, a fresh database per test, runner processes.

The cluster (one per xdist worker) is started by devtools/pgcluster.py from Debian's server
binaries, or those of ``$PG_VERSION`` / ``$PG_BINDIR`` (fetched and cached when pinned),
unless TEST_DATABASE_URL names a server to use instead (its role needs CREATEDB).

Roles, as on RDS: the tests connect as ``app_owner``, a non-superuser that owns the test's
database and is granted what RDS grants ``rds_superuser`` that the runner can use
(``pg_signal_backend``, ``pg_read_all_stats``). A test marked ``no_grants`` connects as
``bare_owner``, which owns its database and has no other privilege. The superuser
(``server.admin_conninfo``) is for arranging what a test needs. ``TEST_DATABASE_ROLE=superuser``
runs the tests as the superuser instead, as before.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import structlog
from psycopg import sql

from devtools.pgcluster import SUPERUSER, Cluster, find_bindir
from tests.support.helpers import PASSWORD, Database, Project, Server

OWNER = "app_owner"
BARE = "bare_owner"
#: what RDS grants the master user's rds_superuser and the runner makes use of
RDS_GRANTS = ("pg_signal_backend", "pg_read_all_stats")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_grants: connect as a database owner with no extra "
        "privilege (no pg_read_all_stats, no pg_signal_backend)",
    )
    config.addinivalue_line(
        "markers",
        "postgres: uses a PostgreSQL server (added to every test "
        "that does; the version matrix runs these: -m postgres)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"server", "template_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("postgres")


def pytest_report_header() -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        return "postgres: TEST_DATABASE_URL"
    role = os.environ.get("TEST_DATABASE_ROLE", "owner")
    return f"postgres: binaries {find_bindir()}, tests connect as {role}"


def runner_role() -> str:
    """The role the runner's tests connect as: ``$TEST_DATABASE_ROLE`` (``owner``, the default,
    or ``superuser``)."""
    role = os.environ.get("TEST_DATABASE_ROLE", "owner")
    if role not in ("owner", "superuser"):
        raise pytest.UsageError(f"TEST_DATABASE_ROLE={role}: expected owner or superuser")
    return OWNER if role == "owner" else SUPERUSER


def create_roles(admin_conninfo: str) -> None:
    """The RDS-like roles (see the module's docstring), password :data:`PASSWORD`."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        for role in (OWNER, BARE):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(PASSWORD)
                )
            )
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, RDS_GRANTS)), sql.Identifier(OWNER)
            )
        )


@pytest.fixture(autouse=True)
def _default_log_config() -> Iterator[None]:
    """The next test in a worker starts with clean logging: a test that runs a CLI in-process
    leaves structlog writing to pytest's captured stream (closed after it), and one that
    applies a logging config with ``disable_existing_loggers`` leaves loggers disabled."""
    yield
    structlog.reset_defaults()
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False


@pytest.fixture(scope="session")
def template_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An initdb'ed, stopped cluster whose data directory the other clusters copy."""
    cluster = Cluster.create(password=PASSWORD)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        parts = urlsplit(url)
        yield Server(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            admin_conninfo=psycopg.conninfo.make_conninfo(
                host=parts.hostname,
                port=parts.port or 5432,
                user=unquote(parts.username or "postgres"),
                password=unquote(parts.password or ""),
                dbname=parts.path.lstrip("/") or "postgres",
            ),
        )
        return
    template: Cluster = request.getfixturevalue("template_cluster")
    cluster = template.clone()
    cluster.start(max_connections="200")
    create_roles(cluster.conninfo())
    yield Server(
        host="127.0.0.1",
        port=cluster.port,
        user=runner_role(),
        password=PASSWORD,
        admin_conninfo=cluster.conninfo(),
    )
    cluster.destroy()


@pytest.fixture
def database(server: Server, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A new, empty database for one test, owned by the test's role, dropped afterwards."""
    if request.node.get_closest_marker("no_grants"):
        if os.environ.get("TEST_DATABASE_URL"):
            pytest.skip("no_grants needs the fixtures' own cluster (TEST_DATABASE_URL is set)")
        server = dataclasses.replace(server, user=BARE)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(server.user)
            )
        )
    db = Database(server, name)
    yield db
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def stopped_cluster(template_cluster: Cluster) -> Iterator[Cluster]:
    """A cluster of this test's own, not started (for outage tests)."""
    cluster = template_cluster.clone()
    yield cluster
    cluster.destroy()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """An empty Alembic project in a temporary directory; tests add revisions."""
    return Project(tmp_path / "project")
