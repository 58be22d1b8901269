"""``/calls``: start, read, list (a user's active calls), end and delete calls."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from src.db.calls import Call
from src.db.dependencies import CallRepositoryDep

router = APIRouter(prefix="/calls", tags=["calls"])


class CallIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=255)
    phone_number: str = Field(min_length=1, max_length=32)


class CallOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: str
    phone_number: str
    is_active: bool
    started_at: datetime
    ended_at: datetime | None


@router.post("", status_code=status.HTTP_201_CREATED)
async def start_call(body: CallIn, calls: CallRepositoryDep) -> CallOut:
    return CallOut.model_validate(await calls.create(body.user_id, body.phone_number))


@router.get("")
async def active_calls(user_id: str, calls: CallRepositoryDep) -> list[CallOut]:
    """The user's active calls, oldest first."""
    return [CallOut.model_validate(c) for c in await calls.list_active_for_user(user_id)]


@router.get("/{call_id}")
async def get_call(call_id: int, calls: CallRepositoryDep) -> CallOut:
    return CallOut.model_validate(_found(await calls.get_by_id(call_id), call_id))


@router.post("/{call_id}/end")
async def end_call(call_id: int, calls: CallRepositoryDep) -> CallOut:
    ended = await calls.end(call_id)
    if ended is None:
        existing = _found(await calls.get_by_id(call_id), call_id)
        raise HTTPException(status.HTTP_409_CONFLICT, f"call {existing.id} has already ended")
    return CallOut.model_validate(ended)


@router.delete("/{call_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_call(call_id: int, calls: CallRepositoryDep) -> Response:
    if not await calls.delete(call_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _found(call: Call | None, call_id: int) -> Call:
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    return call
