"""``CallRepository``: every query the service makes on the ``calls`` table.

The repository works inside the caller's unit of work: it flushes (so ids and server defaults
are known) but never commits; the session's owner (``Database.session``, one per request)
commits or rolls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update

from src.db.calls.model import Call

if TYPE_CHECKING:  # the async stack is the service's; the runner's image imports this package
    from sqlalchemy.ext.asyncio import AsyncSession


class CallRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, user_id: str, phone_number: str) -> Call:
        """A new active call, started now; returned with its id and timestamps."""
        call = Call(user_id=user_id, phone_number=phone_number)
        self.session.add(call)
        await self.session.flush()
        await self.session.refresh(call)  # the server-side defaults (started_at, is_active, ...)
        return call

    async def get_by_id(self, call_id: int) -> Call | None:
        return await self.session.get(Call, call_id)

    async def list_active_for_user(self, user_id: str) -> Sequence[Call]:
        """The user's active calls, oldest first. Served by ``idx_user_active``."""
        stmt = (
            select(Call)
            .where(Call.user_id == user_id, Call.is_active.is_(True))
            .order_by(Call.started_at, Call.id)
        )
        return (await self.session.scalars(stmt)).all()

    async def end(self, call_id: int) -> Call | None:
        """Mark an active call ended (``is_active`` false, ``ended_at`` now) and return it;
        ``None`` if there is no such call or it has already ended (its ``ended_at`` is kept)."""
        stmt = (
            update(Call)
            .where(Call.id == call_id, Call.is_active.is_(True))
            .values(is_active=False, ended_at=func.now(), updated_at=func.now())
            .returning(Call)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def delete(self, call_id: int) -> bool:
        """Delete the call; whether there was one."""
        result = await self.session.execute(delete(Call).where(Call.id == call_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]
