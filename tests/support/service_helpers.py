"""Helpers for the service's tests (src/ and tests/service/): its settings for a test
database, a database migrated by the runner, and running async code from plain tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.support.helpers import Database, Server, new_database, run, runner_env

T = TypeVar("T")


def service_env(db: Database) -> dict[str, str]:
    """The environment of a runner or service process for ``db``: the guide's DB_* variables
    (the service reads only those; the runner reads either those or DATABASE_URL)."""
    env = runner_env(None)
    env.update(
        DB_HOST=db.server.host,
        DB_PORT=str(db.server.port),
        DB_NAME=db.name,
        DB_USER=db.server.user,
        DB_PASSWORD=db.server.password,
    )
    return env


def settings_for(db: Database, **overrides: Any):  # -> DatabaseSettings
    from src.db.config import DatabaseSettings

    fields = dict(
        host=db.server.host,
        port=db.server.port,
        name=db.name,
        user=db.server.user,
        password=db.server.password,
    )
    return DatabaseSettings(**{**fields, **overrides})


def migrate(db: Database, *args: str) -> None:
    """Run ``migration-runner upgrade`` (or ``args``) on ``db`` as a process; assert it worked."""
    result = run(service_env(db), *(args or ("upgrade",)))
    assert result.code == 0, result.stdout + result.stderr


def run_async(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())  # type: ignore[arg-type]


def in_session(db: Database, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``body(session)`` in a session on ``db`` that is rolled back afterwards."""
    from src.db.database import Database as ServiceDatabase

    async def main() -> T:
        service = ServiceDatabase(settings_for(db))
        try:
            async with service.sessions() as session:
                try:
                    return await body(session)
                finally:
                    await session.rollback()
        finally:
            await service.dispose()

    return asyncio.run(main())


@pytest.fixture(scope="session")
def migrated_template(server: Server) -> Iterator[Database]:
    """A database the runner migrated to head, once per test process; tests get copies
    (PostgreSQL's CREATE DATABASE ... TEMPLATE), so the schema is always the runner's."""
    with new_database(server) as db:
        migrate(db)
        yield db


@pytest.fixture(scope="module")
def migrated_database(server: Server, migrated_template: Database) -> Iterator[Database]:
    """A database at head per test module. Tests that share it work in rolled-back sessions,
    or on data of their own (a fresh user id)."""
    with new_database(server, migrated_template) as db:
        yield db


@pytest.fixture
def fresh_migrated_database(server: Server, migrated_template: Database) -> Iterator[Database]:
    """A database at head for one test."""
    with new_database(server, migrated_template) as db:
        yield db
