"""Database (src/db/database.py): one engine, made lazily; sessions that commit on success and
roll back on error; disposal safe to repeat. On a database the runner migrated."""

from __future__ import annotations

import pytest

from src.db.calls import CallRepository
from src.db.config import DatabaseConfigError
from src.db.database import Database
from tests.support.service_helpers import run_async, settings_for


def test_a_session_commits_when_its_block_ends(migrated_database):
    async def body() -> None:
        db = Database(settings_for(migrated_database))
        async with db.session() as session:
            await CallRepository(session).create("committed", "+1")
        await db.dispose()

    run_async(body)
    assert migrated_database.query("SELECT count(*) FROM calls WHERE user_id = 'committed'") == [
        (1,)
    ]


def test_a_session_rolls_back_and_reraises_when_its_block_fails(migrated_database):
    async def body() -> None:
        db = Database(settings_for(migrated_database))
        try:
            async with db.session() as session:
                await CallRepository(session).create("rolled-back", "+1")
                raise LookupError("the request failed after the insert")
        finally:
            await db.dispose()

    with pytest.raises(LookupError):
        run_async(body)
    assert migrated_database.query("SELECT count(*) FROM calls WHERE user_id = 'rolled-back'") == [
        (0,)
    ]


def test_the_engine_is_made_once_on_first_use_and_again_after_dispose(migrated_database):
    async def body() -> tuple[bool, bool, bool]:
        db = Database(settings_for(migrated_database))
        untouched = db._engine is None
        first = db.engine
        same = db.engine is first and db.sessions.kw["bind"] is first
        await db.dispose()
        await db.dispose()  # safe twice
        renewed = db.engine is not first
        await db.dispose()
        return untouched, same, renewed

    assert run_async(body) == (True, True, True)


def test_settings_are_read_from_the_environment_only_on_first_use(monkeypatch):
    for name in ("DB_HOST", "DB_NAME", "DB_USER", "DB_SECRET"):
        monkeypatch.delenv(name, raising=False)
    db = Database()  # no settings yet: nothing read, nothing raised
    with pytest.raises(DatabaseConfigError, match="missing DB_HOST, DB_NAME, DB_USER"):
        _ = db.engine
