"""squawk's rules (the ``squawk-cli`` wheel, an optional extra) over each revision's SQL.

Each revision's statements go into a file of their own, one per line range, so each squawk
finding maps back to its revision and statement, and so to the line in the revision file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from runner.checklist.lint.sql import Statement
from runner.errors import ConfigError

#: the runner sets lock_timeout (MIGRATION_DDL_LOCK_SCHEDULE) and statement_timeout on every
#: revision itself: a revision need not
DEFAULT_EXCLUDE = ("require-lock-timeout", "require-statement-timeout")


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
    """squawk over each revision's statements (``revision -> statements``), in one process."""
    binary = squawk_binary()
    with tempfile.TemporaryDirectory(prefix="migration-runner-lint-") as tmp:
        starts: dict[str, list[int]] = {}
        files: dict[str, str] = {}
        for index, (revision, stmts) in enumerate(statements.items()):
            path = Path(tmp) / f"{index:05d}.sql"
            lines, text = [], ""
            for stmt in stmts:
                lines.append(text.count("\n"))
                text += stmt.sql + ";\n"
            path.write_text(text)
            starts[revision] = lines
            files[str(path)] = revision
        if not files:
            return []
        args = [binary, "--reporter", "json", *(f"--exclude={rule}" for rule in exclude), *files]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        try:
            found = json.loads(proc.stdout or "[]")
        except ValueError:
            found = None
        if proc.returncode not in (0, 1) or not isinstance(found, list):
            raise ConfigError(
                f"squawk failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-500:]}"
            )
    hits = []
    for item in found:
        owner = files.get(str(Path(item["file"])))
        if owner is None:
            continue
        index = sum(1 for start in starts[owner] if start <= item["line"]) - 1
        hits.append(
            SquawkHit(
                owner,
                max(index, 0),
                item["rule_name"],
                "error" if str(item["level"]).lower() == "error" else "warning",
                item["message"],
                item.get("help") or "",
            )
        )
    return hits
