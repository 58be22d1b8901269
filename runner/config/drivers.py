"""The database drivers a project's URL may name, and what the runner needs from each: whether
it is installed, the backend pid of one of its connections, and a way to cancel that
connection's statement from another thread.

The runner's own sessions (the lock, the probe, the blocker watch) are always psycopg 3. The
connection handed to env.py uses the driver the URL names, so that revisions behave exactly
as under plain Alembic (psycopg2 interpolates parameters on the client; psycopg 3 and asyncpg
bind them on the server, with different casts). Drivers other than psycopg 3 are the
project's dependencies, not the runner's: they are used only when installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import threading
from collections.abc import Callable
from typing import Any

from runner.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Driver:
    name: str  # as in the SQLAlchemy URL: postgresql+<name>://
    module: str  # what to import
    package: str  # what a project installs to get it
    is_async: bool = False


DRIVERS = {
    d.name: d
    for d in (
        Driver("psycopg", "psycopg", "psycopg[binary]"),
        Driver("psycopg2", "psycopg2", "psycopg2-binary"),
        Driver("asyncpg", "asyncpg", "asyncpg", is_async=True),
        Driver("psycopg_async", "psycopg", "psycopg[binary]", is_async=True),
    )
}

#: URL scheme -> driver name (a bare postgresql:// means psycopg 3, as in SQLAlchemy 2)
SCHEMES = {
    "postgresql": "psycopg",
    "postgres": "psycopg",
    **{f"postgresql+{name}": name for name in DRIVERS},
}


def require(name: str) -> Driver:
    """The driver ``name``, checked to be importable (without importing it: the no-op path
    stays cheap). Raises :class:`ConfigError` saying what to install."""
    driver = DRIVERS[name]
    needed = [driver.module] + (["greenlet"] if driver.is_async else [])
    missing = [module for module in needed if importlib.util.find_spec(module) is None]
    if missing:
        what = driver.package if driver.module in missing else "sqlalchemy[asyncio] (greenlet)"
        raise ConfigError(
            f"DATABASE_URL names the {name} driver (postgresql+{name}://), which is "
            f"not installed here: add {what} to the project's dependencies (the "
            "image's), or name another driver",
            driver=name,
        )
    return driver


def backend_pid(driver_connection: Any, dbapi_connection: Any) -> int:
    """``pg_backend_pid()`` of a connection of any driver: what the driver knows, else asked
    with one query on ``dbapi_connection`` (any transaction that starts is rolled back)."""
    info = getattr(driver_connection, "info", None)
    for known in (
        getattr(info, "backend_pid", None),  # psycopg 3, psycopg2
        _call(driver_connection, "get_server_pid"),  # asyncpg
        _call(driver_connection, "get_backend_pid"),
    ):  # psycopg2, older
        if isinstance(known, int):
            return known
    cursor = dbapi_connection.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    (pid,) = cursor.fetchone()
    dbapi_connection.rollback()
    return int(pid)


def _call(obj: Any, name: str) -> Any:
    method = getattr(obj, name, None)
    return method() if callable(method) else None


class Canceller:
    """Cancels the statement running on one backend, from any thread (a signal handler's
    helper): the driver's own thread-safe cancel where it has one (psycopg 3's
    ``cancel_safe``, psycopg2's ``cancel``), else ``pg_cancel_backend(pid)`` from a side
    session of the runner's own, opened at the first cancel and kept for the next ones.
    Safe to call repeatedly and concurrently; :meth:`close` closes the side session."""

    def __init__(self, driver_connection: Any, pid: int, open_session: Callable[[], Any]) -> None:
        self.pid = pid
        self._own = _own_cancel(driver_connection)
        self._open_session = open_session
        self._side: Any = None
        self._mutex = threading.Lock()

    def __call__(self) -> None:
        if self._own is not None:
            self._own()
            return
        with self._mutex:
            if self._side is None:
                self._side = self._open_session()
            self._side.execute("SELECT pg_cancel_backend(%s)", (self.pid,))

    def close(self) -> None:
        with self._mutex:
            if self._side is not None:
                with contextlib.suppress(Exception):
                    self._side.close()
                self._side = None


def _own_cancel(driver_connection: Any) -> Callable[[], None] | None:
    import inspect

    module = type(driver_connection).__module__.split(".")[0]
    if module == "psycopg":
        cancel = getattr(driver_connection, "cancel_safe", None)
        # psycopg's AsyncConnection.cancel_safe is a coroutine: it belongs to its loop
        return None if cancel is None or inspect.iscoroutinefunction(cancel) else cancel
    if module == "psycopg2":
        cancel_now: Callable[[], None] = driver_connection.cancel
        return cancel_now
    return None  # asyncpg: its cancel belongs to its loop
