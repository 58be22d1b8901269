"""The declarative ``Base`` every model derives from, and the service's connection and
session management.

``Base`` is all the migrations need (alembic/env.py imports it in the runner's image, which has
no async stack): the async engine is therefore imported only when a :class:`Database` first
connects, never at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.orm import DeclarativeBase

from src.db.config import DatabaseSettings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


class Base(DeclarativeBase):
    pass


class Database:
    """One engine and one session factory, created once, on first use.

    Contract: :meth:`session` commits when its block ends normally and rolls back when it
    raises (then re-raises); :meth:`dispose` closes every pooled connection and is safe to
    call twice or before any use. Settings are read from the environment only when none are
    given, on first use; a bad setting raises :class:`~src.db.config.DatabaseConfigError`.
    """

    def __init__(self, settings: DatabaseSettings | None = None) -> None:
        self._settings = settings
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def settings(self) -> DatabaseSettings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._engine = create_async_engine(
                self.settings.url(), **self.settings.engine_options()
            )
        return self._engine

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessions is None:
            from sqlalchemy.ext.asyncio import async_sessionmaker

            # expire_on_commit=False: objects stay readable after the commit (e.g. to render
            # a response) without a lazy load, which async sessions cannot do implicitly
            self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        return self._sessions

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for one unit of work: committed on success, rolled back on error."""
        async with self.sessions() as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None
        self._sessions = None
