"""The service's FastAPI app: ``uvicorn src.main:app``.

``app`` is built when uvicorn first asks for it, and reads the database settings then: a missing
or invalid setting ends the process with exit code 2 and one line naming the variable, instead
of a traceback at the first request. Tests build their own with :func:`create_app`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError, TimeoutError

from src.db.config import DatabaseConfigError, load_settings
from src.db.database import Database
from src.db.migrations import ALEMBIC_INI
from src.routes import calls, health

log = logging.getLogger(__name__)


def create_app(database: Database, alembic_ini: Path = ALEMBIC_INI) -> FastAPI:
    """The app over ``database`` (disposed of on shutdown); ``/healthz`` compares it with the
    heads of the migrations that ``alembic_ini`` names."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await database.dispose()

    app = FastAPI(title="service", lifespan=lifespan)
    app.state.database = database
    app.state.alembic_ini = alembic_ini
    app.include_router(health.router)
    app.include_router(calls.router)
    # connection-level failures (failover, network, an exhausted pool): retryable, so 503
    for error in (OperationalError, InterfaceError, TimeoutError):
        app.add_exception_handler(error, _database_unavailable)
    return app


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "database unavailable during %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503)


def __getattr__(name: str) -> FastAPI:
    if name != "app":
        raise AttributeError(name)
    try:
        settings = load_settings()
    except DatabaseConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    built = globals()["app"] = create_app(Database(settings))
    return built
