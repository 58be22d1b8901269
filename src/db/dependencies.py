"""FastAPI dependencies: one session per request, and the repositories over it.

The session is function-scoped: it commits (or rolls back) as soon as the endpoint returns,
before the response is sent, so a client never sees a success whose commit failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from src.db.calls import CallRepository
from src.db.database import Database


def get_database(request: Request) -> Database:
    """The application's :class:`Database` (created once, in ``create_app``)."""
    return request.app.state.database


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    async with database.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_call_repository(session: SessionDep) -> CallRepository:
    return CallRepository(session)


CallRepositoryDep = Annotated[CallRepository, Depends(get_call_repository, scope="function")]
