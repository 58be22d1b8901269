"""The console renderer: what a person at a terminal reads (JSON stays for everything
else). One short line per event, coloured on a terminal (unless ``NO_COLOR``):

- ``error``: one red line, the message (it says what to do) and the exit code;
- ``{upgrade,downgrade}.plan`` then ``revision.started``: progress, ``[n/N]`` (a bar when
  there are many revisions), the revision's message and the time since the plan;
- ``revision.progress``: one live line per revision (phase, percent, ETA, or what it waits
  on), rewritten in place while nothing else was printed since (:func:`progress_line`);
- ``backfill.progress``: a bar, rows done, rate and ETA (one line per event: at most one a
  second);
- ``start``: version and command (the settings only at debug level);
- anything else: ``level event key=value ...``, enums shown as their values.
"""

from __future__ import annotations

import enum
import os
import time
from typing import Any, TextIO

BAR_FROM = 10  # revisions: from here on, progress shows a bar
BAR_WIDTH = 20
COLORS = {
    "error": "\x1b[31m",
    "warning": "\x1b[33m",
    "info": "",
    "debug": "\x1b[2m",
    "done": "\x1b[32m",
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
}
RESET = "\x1b[0m"
#: cursor up one line and erase it: the next line replaces the previous progress line
REWRITE = "\x1b[1A\x1b[2K"
DONE_EVENTS = ("revision.applied", "revision.reverted", "revision.stamped")


#: C0 and C1 control characters (ESC among them) but tab: a revision's message or a
#: driver's error must not move the cursor, recolour or retitle a person's terminal
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``)."""
    return text.translate(_CONTROLS)


def _printable_fields(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, (list, tuple)):
        return [_printable_fields(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable_fields(v) for k, v in value.items()}
    return value


def use_colors(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def progress(n: int, total: int) -> str:
    """``3/5``, or with a bar when there are many: ``[######--------------] 6/20``."""
    if total < BAR_FROM:
        return f"{n}/{total}"
    filled = round(BAR_WIDTH * n / total) if total else BAR_WIDTH
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {n}/{total}"


def backfill_bar(event: dict[str, Any]) -> str:
    """``backfill calls [######--------------] 30% 300,000 rows, 41,000/s, ETA 17 s``; with
    the total unknown (no statistics, too many rows to count), no bar and no percentage:
    ``backfill calls 300,000 rows (total unknown), 41,000/s``."""
    done = int(event.get("rows_done") or 0)
    if event.get("rows_left_estimate") is None and not event.get("finished"):
        return (
            f"backfill {event.get('table')} {done:,} rows (total unknown), "
            f"{int(event.get('rows_per_s') or 0):,}/s"
        )
    left = int(event.get("rows_left_estimate") or 0)
    share = 1.0 if event.get("finished") or not done + left else done / (done + left)
    filled = round(BAR_WIDTH * share)
    eta = event.get("eta_s")
    tail = "done" if event.get("finished") else (f"ETA {eta:.0f} s" if eta is not None else "")
    return (
        f"backfill {event.get('table')} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
        f"{share:.0%} {done:,} rows, {int(event.get('rows_per_s') or 0):,}/s, {tail}"
    ).rstrip(", ")


def value(item: Any) -> str:
    """A field's value as a person reads it: enums as their values, no Python reprs."""
    if isinstance(item, enum.Enum):
        item = item.value
    if isinstance(item, (list, tuple)):
        return ",".join(value(i) for i in item) or "-"
    return str(item)


def progress_line(event: dict[str, Any]) -> str:
    """A ``revision.progress`` event as a person reads it, e.g. ``r1 12.0 s: building
    index: scanning table 42.0 % (blocks 1200/2857), ETA 8.1 s`` or ``r1 3.0 s: waiting on
    Lock (relation), blocked by pid 42 app-report``."""
    parts = [f"{event.get('revision')} {event.get('elapsed_s')} s:"]
    if event.get("phase") or event.get("command"):
        parts.append(str(event.get("phase") or event.get("command")))
    if event.get("percent") is not None:
        parts.append(
            f"{event['percent']} % ({event.get('unit')} {event.get('done')}/{event.get('total')})"
            + (f", ETA {event['eta_s']} s" if event.get("eta_s") is not None else "")
        )
    if event.get("wait_event_type"):
        parts.append(f"waiting on {event['wait_event_type']} ({event.get('wait_event')})")
    blockers = event.get("blockers") or []
    if blockers:
        parts.append(
            "blocked by "
            + ", ".join(
                f"pid {b.get('pid')} {b.get('application_name') or ''}".rstrip() for b in blockers
            )
        )
    elif len(parts) == 1:
        parts.append(str(event.get("state") or "running"))
    return " ".join(parts)


class Console:
    """A structlog renderer (the last processor) keeping the progress of one run."""

    def __init__(self, colors: bool, verbose: bool = False, live: bool = False) -> None:
        """``live``: the stream is a terminal, where a progress line may be rewritten."""
        self.colors, self.verbose, self.live = colors, verbose, live
        self.total = 0
        self.started = 0
        self.since = time.monotonic()
        self.progress_shown = False  # the last line printed is a progress line

    def paint(self, text: str, style: str) -> str:
        code = COLORS.get(style, "")
        return f"{code}{text}{RESET}" if self.colors and code else text

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> str:
        event = {k: _printable_fields(v) if k != "exception" else v for k, v in event.items()}
        name = str(event.pop("event", ""))
        level = str(event.pop("level", "info"))
        event.pop("timestamp", None)
        rewrite = self.live and self.progress_shown
        self.progress_shown = name == "revision.progress"
        if self.progress_shown:
            return (REWRITE if rewrite else "") + self.paint("  ... " + progress_line(event), "dim")
        if name == "error":
            return self.paint(
                f"error: {event.get('message', '')} (exit {event.get('exit_code')})", "error"
            )
        if name.endswith(".plan"):
            return self._plan(name, event)
        if name == "revision.started":
            return self._started(event)
        if name == "backfill.progress":
            return "  " + backfill_bar(event)
        if name in DONE_EVENTS:
            return self.paint(
                f"  done {event.get('revision')} ({event.get('duration_ms')} ms)", "done"
            )
        if name == "start" and not self.verbose:
            event.pop("settings", None)
        if name == "summary":
            return self._summary(event)
        fields = " ".join(f"{key}={value(item)}" for key, item in event.items() if item is not None)
        head = self.paint(f"{level:<7}", level) + " " + self.paint(name, "bold")
        return f"{head} {fields}".rstrip()

    def _plan(self, name: str, event: dict[str, Any]) -> str:
        pending = list(event.get("pending") or [])
        self.total, self.started, self.since = len(pending), 0, time.monotonic()
        kind = name.split(".")[0]
        return (
            f"{kind}: {len(pending)} revision{'s' if len(pending) != 1 else ''}, "
            f"{','.join(event.get('from_revision') or ['base'])} -> "
            f"{','.join(event.get('target') or ['base'])}"
        )

    def _started(self, event: dict[str, Any]) -> str:
        self.started += 1
        elapsed = time.monotonic() - self.since
        where = progress(self.started, self.total) if self.total else str(self.started)
        message = event.get("message") or ""
        return (
            f"{where} {self.paint(str(event.get('revision')), 'bold')} {message}  "
            + self.paint(f"{elapsed:.1f} s", "dim")
        ).rstrip()

    def _summary(self, event: dict[str, Any]) -> str:
        outcome = value(event.get("outcome"))
        parts = [f"{event.get('command')}: {outcome}"]
        if event.get("applied"):
            parts.append(f"{len(event['applied'])} revision(s)")
        if event.get("to_revision") is not None:
            parts.append(f"at {value(event['to_revision']) or 'base'}")
        parts.append(f"in {event.get('total_ms', 0) / 1000:.1f} s, exit {event.get('exit_code')}")
        style = "done" if event.get("exit_code") == 0 else "error"
        return self.paint(", ".join(parts), style)
