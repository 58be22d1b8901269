"""What a run did, gathered as it goes, for the one ``summary`` event."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from runner.errors import ExitCode


@dataclasses.dataclass
class Record:
    """Filled in by the command as facts become known, so the summary is complete whichever
    step fails. ``None`` means never learned."""

    command: str
    outcome: str = "failed"
    from_revision: list[str] | None = None
    to_revision: list[str] | None = None
    applied: list[str] = dataclasses.field(default_factory=list)
    connect_attempts: int = 0
    lock_wait_ms: int | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    exit_code: int = ExitCode.INTERNAL

    def summary(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["total_ms"] = int((time.monotonic() - fields.pop("started")) * 1000)
        return fields
