"""What the runner shows of other sessions (``pg_stat_activity``): their queries redacted,
then cut, never by SQL, so that no secret a query carries reaches a log."""

from __future__ import annotations

from typing import Any

from runner.observe.redact import clip

#: how much of another session's query a blocker report shows: fetched longer, redacted
#: (it may be ``ALTER ROLE ... PASSWORD '...'``), then cut here, never by SQL
QUERY_SHOWN = 60


def shown_query(row: dict[str, Any], limit: int) -> dict[str, Any]:
    """``row`` (a pg_stat_activity row) with its ``query`` redacted and cut to ``limit``."""
    if row.get("query"):
        row["query"] = clip(row["query"], limit)
    return row
