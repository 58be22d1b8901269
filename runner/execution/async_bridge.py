"""Synchronous code over an async driver (asyncpg, psycopg's async mode), without a running
event loop.

SQLAlchemy's async dialects work in sync code only inside a greenlet it recognises: each
driver call hands a coroutine to the greenlet's parent, which awaits it. SQLAlchemy's own
``greenlet_spawn`` awaits them inside a running loop, so an env.py run there could not call
``asyncio.run()`` itself, as Alembic's async template does. :func:`run_sync` instead runs
each coroutine to completion on a loop of its own between switches: while env.py runs, no
loop is running, and env.py may start its own.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_sync(fn: Callable[[], T], loop: asyncio.AbstractEventLoop) -> T:
    """Call ``fn`` where SQLAlchemy's async drivers work synchronously, their coroutines run
    on ``loop`` (which must not be running). Exceptions propagate; signals land in ``fn``'s
    frames or in the loop's wait, as in any sync code."""
    import greenlet

    class Child(greenlet.greenlet):  # type: ignore[misc]
        __sqlalchemy_greenlet_provider__ = True

    child = Child(fn, greenlet.getcurrent())
    result = child.switch()
    while not child.dead:
        try:
            value = loop.run_until_complete(result)
        except BaseException:
            result = child.throw(*sys.exc_info())
        else:
            result = child.switch(value)
    return result  # type: ignore[no-any-return]


def new_loop() -> asyncio.AbstractEventLoop:
    """A loop for :func:`run_sync`, not made the thread's current loop (env.py's own
    ``asyncio.run`` makes and closes its own)."""
    return asyncio.new_event_loop()
