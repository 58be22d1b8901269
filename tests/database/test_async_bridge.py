"""Sync code over an async driver without a running loop: SQLAlchemy's asyncpg dialect works
synchronously, and the code inside may still run asyncio.run() itself (as Alembic's async
template does)."""

from __future__ import annotations

import asyncio

from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from runner.execution.async_bridge import new_loop, run_sync
from tests.support.projects import driver_url


def test_async_driver_works_synchronously_and_code_inside_may_run_its_own_loop(database):
    url = driver_url(database, "asyncpg")
    engine = create_async_engine(url, poolclass=pool.NullPool).sync_engine

    async def own_loop() -> int:
        inner = create_async_engine(url, poolclass=pool.NullPool)
        async with inner.connect() as conn:
            value = (await conn.execute(text("SELECT 2"))).scalar_one()
        await inner.dispose()
        return value

    def body() -> tuple[int, int, int]:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT 1")).scalar_one()
            nested = asyncio.run(own_loop())
            again = conn.execute(text("SELECT 3")).scalar_one()  # the same connection, after
        return first, nested, again

    loop = new_loop()
    try:
        assert run_sync(body, loop) == (1, 2, 3)
    finally:
        loop.close()


def test_errors_inside_propagate_with_their_type(database):
    engine = create_async_engine(
        driver_url(database, "asyncpg"), poolclass=pool.NullPool
    ).sync_engine

    def body() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))

    loop = new_loop()
    try:
        run_sync(body, loop)
    except Exception as exc:  # SQLAlchemy's ProgrammingError, with asyncpg's SQLSTATE
        from runner.execution.failure import sqlstate_of

        assert sqlstate_of(exc) == "42P01"
    else:
        raise AssertionError("no error")
    finally:
        loop.close()
