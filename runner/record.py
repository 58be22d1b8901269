"""The facts a run learns as it goes (where the database was, what was applied, how long the
lock took), so that the one ``summary`` event is complete whichever step fails. Facts only:
the outcome and the exit code are the CLI's (see :mod:`runner.outcome`)."""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass
class Facts:
    """``None`` means never learned."""

    from_revision: list[str] | None = None
    to_revision: list[str] | None = None
    applied: list[str] = dataclasses.field(default_factory=list)
    connect_attempts: int = 0
    lock_wait_ms: int | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)

    def at(self, revision: tuple[str, ...]) -> None:
        """The database is at ``revision`` (before and, so far, after)."""
        self.from_revision = self.to_revision = list(revision)
