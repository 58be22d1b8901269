"""The SQL each revision would run, rendered offline, each statement with the line of the
revision file that produced it.

Alembic's offline mode writes one statement per ``output_buffer.write``, from inside the
revision's ``upgrade()``: the buffer here looks up the call stack for the revision file's
frame, which gives the exact line of the ``op.*`` call (None for what Alembic adds itself:
``BEGIN``, ``COMMIT``, the version table).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
from types import FrameType

from runner.errors import ConfigError, first_line
from runner.scripts.env_run import run_env
from runner.scripts.load import Loaded, Revision, set_url

OFFLINE_URL = "postgresql+psycopg://offline@localhost/offline"


@dataclasses.dataclass(frozen=True)
class Statement:
    sql: str  # one statement, without its terminating semicolon
    line: int | None  # 1-based line in the revision file; None: Alembic's own


class _Recorder(io.StringIO):
    """An output buffer that remembers, per write, the revision file's line on the stack."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = os.path.realpath(path)
        self.chunks: list[tuple[str, int | None]] = []

    def write(self, text: str) -> int:
        frame: FrameType | None = sys._getframe(1)
        line = None
        while frame is not None:
            if os.path.realpath(frame.f_code.co_filename) == self.path:
                line = frame.f_lineno
                break
            frame = frame.f_back
        self.chunks.append((text, line))
        return super().write(text)


def split_statements(text: str) -> list[str]:
    """``text`` cut at semicolons outside quotes, dollar quotes and comments. Pure."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            end = text.find(c, i + 1)
            i = n if end < 0 else end + 1
            continue
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "$":
            tag = re.match(r"\$\w*\$", text[i:])
            if tag:
                end = text.find(tag.group(), i + len(tag.group()))
                i = n if end < 0 else end + len(tag.group())
                continue
        if c == ";":
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def revision_sql(loaded: Loaded, rev: Revision) -> list[Statement]:
    """The statements ``rev``'s upgrade renders offline (from its parent; base for a root).
    Raises :class:`ConfigError` when env.py cannot render offline SQL."""
    recorder = _Recorder(rev.path)
    loaded.config.output_buffer = recorder
    set_url(loaded.config, OFFLINE_URL)
    try:
        run_env(
            loaded, "upgrade", rev.id, starting_rev=rev.down[0] if rev.down else None, as_sql=True
        )
    except Exception as exc:  # env.py or a revision failing offline: the run cannot lint
        raise ConfigError(
            f"lint cannot render the SQL of revision {rev.id} ({rev.path}) "
            f"offline: {type(exc).__name__}: {first_line(exc)}. env.py must "
            "support offline mode (context.is_offline_mode(), as Alembic's "
            "template does)",
            revision=rev.id,
        ) from None
    finally:
        loaded.config.output_buffer = None
    return [
        Statement(sql, line) for text, line in recorder.chunks for sql in split_statements(text)
    ]
