"""``GET /healthz``: the database is reachable and at the migrations' head.

200 when it is at head (or ahead: a newer deploy migrated it); 503 when it is unreachable,
empty or behind, so a load balancer keeps traffic away from a task whose schema is missing.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from src.db.database import Database
from src.db.dependencies import get_database
from src.db.migrations import database_revisions, migration_status, script_heads

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz(
    request: Request, database: Annotated[Database, Depends(get_database)]
) -> JSONResponse:
    heads, known = script_heads(request.app.state.alembic_ini)
    try:
        async with database.engine.connect() as conn:
            current = await database_revisions(conn)
    except (SQLAlchemyError, OSError) as exc:
        # the driver's message names host and port (never the password); enough to act on
        log.warning("healthz: database unreachable: %s", type(exc).__name__)
        return JSONResponse({"status": "unreachable", "heads": sorted(heads)}, status_code=503)
    status = migration_status(current, heads, known)
    body = {"status": status, "revision": sorted(current), "heads": sorted(heads)}
    return JSONResponse(body, status_code=200 if status in ("at_head", "ahead") else 503)
