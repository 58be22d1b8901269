"""Fixtures: a real PostgreSQL per test worker, a fresh database per test, runner processes.

The cluster is started from the installed server binaries (one per xdist worker), unless
TEST_DATABASE_URL names a server to use instead (its role needs CREATEDB).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import structlog

from devtools.pgcluster import Cluster
from tests.helpers import PASSWORD, Database, Project, Server


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
        yield Server(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                     user=unquote(parts.username or "postgres"),
                     password=unquote(parts.password or ""),
                     admin_conninfo=psycopg.conninfo.make_conninfo(
                         host=parts.hostname, port=parts.port or 5432,
                         user=unquote(parts.username or "postgres"),
                         password=unquote(parts.password or ""),
                         dbname=parts.path.lstrip("/") or "postgres"))
        return
    template: Cluster = request.getfixturevalue("template_cluster")
    cluster = template.clone()
    cluster.start(max_connections="200")
    yield Server(host="127.0.0.1", port=cluster.port, user="postgres", password=PASSWORD,
                 admin_conninfo=cluster.conninfo())
    cluster.destroy()


@pytest.fixture
def database(server: Server) -> Iterator[Database]:
    """A new, empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
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
