"""squawk's rules (the ``squawk-cli`` wheel, an optional extra) over each revision's SQL.

Each revision's statements go into a file of their own, one per line range, so each squawk
finding maps back to its revision and statement, and so to the line in the revision file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.checklist.lint.sql import Statement
from runner.errors import ConfigError

#: the runner sets lock_timeout (MIGRATION_DDL_LOCK_SCHEDULE) and statement_timeout on every
#: revision itself: a revision need not
DEFAULT_EXCLUDE = ("require-lock-timeout", "require-statement-timeout")
#: how long squawk may take over one revision's SQL
SQUAWK_TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class SquawkHit:
    revision: str
    statement: int  # index into that revision's statements
    rule: str
    level: str  # error or warning
    message: str
    help: str


def squawk_binary() -> str:
    """The squawk executable: beside this Python (a venv's bin), or on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found: str | None = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        raise ConfigError(
            "lint needs squawk: install the `lint` extra "
            "(pip install 'migration-runner[lint]'), or skip its rules"
        )
    return found


def run_squawk(
    statements: Mapping[str, list[Statement]], exclude: tuple[str, ...] = DEFAULT_EXCLUDE
) -> list[SquawkHit]:
    """squawk over each revision's statements (``revision -> statements``): one process a
    revision, reading the SQL on its stdin, so that nothing is written anywhere (the image's
    root filesystem is read-only, often without a tmpfs)."""
    binary = squawk_binary()
    hits: list[SquawkHit] = []
    for revision, stmts in statements.items():
        starts, text = [], ""
        for stmt in stmts:
            starts.append(text.count("\n"))
            text += stmt.sql + ";\n"
        if text:
            found = _squawk(binary, text, f"{revision}.sql", exclude)
            hits.extend(_hit(revision, starts, item) for item in found)
    return hits


def _squawk(binary: str, sql: str, name: str, exclude: tuple[str, ...]) -> list[dict[str, Any]]:
    args = [binary, "--reporter", "json", f"--stdin-filepath={name}"]
    args += [f"--exclude={rule}" for rule in exclude]
    # what cannot be UTF-8 (a lone surrogate in a revision's string) becomes U+FFFD: squawk
    # reads UTF-8, and one character more or less moves no line
    data = sql.encode("utf-8", errors="replace")
    try:
        proc = subprocess.run(args, input=data, capture_output=True, timeout=SQUAWK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"squawk did not finish {name} within {SQUAWK_TIMEOUT_S} s ({len(data)} bytes of "
            "SQL): exclude the revision, or skip lint"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot run squawk ({binary}): {exc.strerror or exc}") from None
    out, err = (stream.decode("utf-8", errors="replace") for stream in (proc.stdout, proc.stderr))
    try:
        found = json.loads(out or "[]")
    except ValueError:
        found = None
    if proc.returncode not in (0, 1) or not isinstance(found, list):
        said = (err or out).strip()[-500:]
        if proc.returncode < 0:  # a crash says nothing: name the signal
            said = f"killed by {signal.Signals(-proc.returncode).name} {said}".strip()
        raise ConfigError(f"squawk failed (exit {proc.returncode}): {said}")
    return found


def _hit(revision: str, starts: list[int], item: dict[str, Any]) -> SquawkHit:
    """A squawk finding on the statement of ``revision`` it falls in (``starts``: the first
    line of each statement in the text squawk read)."""
    index = sum(1 for start in starts if start <= item["line"]) - 1
    return SquawkHit(
        revision,
        max(index, 0),
        item["rule_name"],
        "error" if str(item["level"]).lower() == "error" else "warning",
        item["message"],
        item.get("help") or "",
    )
