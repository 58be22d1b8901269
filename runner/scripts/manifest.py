"""The manifest: what the migration scripts say (heads, the revision graph, messages,
checksums), written at image build time, so that a runner with nothing to do never imports a
revision file, Alembic or SQLAlchemy.

The manifest lists every ``*.py`` file under the versions directories with its size, its
modification time (whole seconds) and its SHA-256. At start-up the runner lists the files
again: a file added, removed or resized makes the manifest stale; a file whose size and
mtime match is trusted without reading it (the check Python itself makes for ``.pyc``
files); any other file is hashed, and a different hash makes the manifest stale. A stale
manifest is ignored: the runner loads the scripts instead (slower, same result).

Whole seconds survive image layers that drop sub-second times. A file modified less than
:data:`RACY_S` seconds before the manifest was written is recorded without an mtime, so it is
always hashed: an edit within the same clock tick could otherwise keep size and mtime.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runner.scripts.load import Revision, Scripts, file_checksum

FORMAT = 3  # 3: each revision's phase
FILENAME = "migration-manifest.json"
RACY_S = 3
NS = 1_000_000_000

#: one file as listed: (size in bytes, mtime in whole seconds)
Stat = tuple[int, int]


def default_path(alembic_config: Path) -> Path:
    return alembic_config.parent / FILENAME


def listing(base: str, versions: Iterable[str]) -> dict[str, Stat]:
    """Every ``*.py`` file under ``versions`` (recursively, skipping ``__pycache__``), keyed
    by its path relative to ``base``."""
    found: dict[str, Stat] = {}
    pending = list(versions)
    while pending:
        directory = pending.pop()
        relative = os.path.relpath(directory, base)  # once per directory: relpath is slow
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir() and entry.name != "__pycache__":
                    pending.append(entry.path)
                elif entry.name.endswith(".py") and entry.is_file():
                    st = entry.stat()
                    # plain concatenation: os.path.join per file costs more than the stat
                    found[f"{relative}/{entry.name}"] = (st.st_size, st.st_mtime_ns // NS)
    return found


def to_hash(
    recorded: Mapping[str, Mapping[str, Any]], seen: Mapping[str, Stat]
) -> list[str] | None:
    """The files whose content must be hashed to trust the manifest; None when the listing
    alone shows it is stale (a file added, removed or resized)."""
    if recorded.keys() != seen.keys():
        return None
    unsure = []
    for name, (size, mtime_s) in seen.items():
        entry = recorded[name]
        if entry["size"] != size:
            return None
        if entry["mtime_s"] != mtime_s:  # None (recorded as racy) never matches
            unsure.append(name)
    return unsure


def build(scripts: Scripts, path: Path, now_s: float | None = None) -> dict[str, Any]:
    """The manifest document for ``scripts``, with paths relative to ``path``'s directory."""
    base = str(path.parent.resolve())
    now_s = time.time() if now_s is None else now_s
    versions = [str(Path(v).resolve()) for v in scripts.versions]
    files = {
        name: {
            "size": size,
            "mtime_s": mtime_s if mtime_s < now_s - RACY_S else None,
            "sha256": file_checksum(os.path.join(base, name)),
        }
        for name, (size, mtime_s) in sorted(listing(base, versions).items())
    }
    return {
        "format": FORMAT,
        "versions": [os.path.relpath(v, base) for v in versions],
        "files": files,
        "heads": list(scripts.heads),
        "revisions": [
            {
                "id": rev.id,
                "down": list(rev.down),
                "message": rev.message,
                "path": os.path.relpath(Path(rev.path).resolve(), base),
                "checksum": rev.checksum,
                "options": dict(rev.options),
                "branches": list(rev.branches),
                "phase": rev.phase,
                "lock_schedule": rev.lock_schedule,
            }
            for rev in scripts.revisions.values()
        ],
    }


def inconsistency(document: Mapping[str, Any]) -> str | None:
    """Why ``document`` does not describe its own files (None: it does): every listed file
    but ``__init__.py`` is exactly one revision's, every revision's file is listed, every
    down revision is known, and the heads are the graph's. A manifest hand-edited, or
    written by another version, must never stand for scripts it does not describe."""
    files = set(document["files"])
    paths = [item["path"] for item in document["revisions"]]
    ids = [item["id"] for item in document["revisions"]]
    if len(set(paths)) != len(paths) or len(set(ids)) != len(ids):
        return "a file or a revision id is listed twice"
    if not set(paths) <= files:
        return "a revision's file is not among the files listed"
    uncovered = {f for f in files - set(paths) if os.path.basename(f) != "__init__.py"}
    if uncovered:
        return f"files without a revision: {', '.join(sorted(uncovered))}"
    downs = {d for item in document["revisions"] for d in item["down"]}
    if not downs <= set(ids):
        return "a down revision is not listed"
    if sorted(set(ids) - downs) != sorted(document["heads"]):
        return "the heads are not the graph's"
    return None


def write(scripts: Scripts, path: Path) -> dict[str, Any]:
    document = build(scripts, path)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return document


def read(path: Path) -> tuple[Scripts | None, str, int]:
    """The scripts as the manifest describes them, ``"ok"`` and how many files had to be
    hashed; or None and why not (``"absent"``, ``"stale"``, ``"unreadable"``,
    ``"inconsistent"``: see :func:`inconsistency`). Never raises for a bad manifest."""
    try:
        with open(path, "rb") as handle:
            document = json.loads(handle.read())
    except FileNotFoundError:
        return None, "absent", 0
    except (OSError, ValueError):
        return None, "unreadable", 0
    try:
        if document.get("format") != FORMAT:
            return None, "unreadable", 0
        if inconsistency(document) is not None:
            return None, "inconsistent", 0
        base = os.path.dirname(os.path.abspath(path))
        versions = [os.path.join(base, v) for v in document["versions"]]
        recorded = document["files"]
        try:
            unsure = to_hash(recorded, listing(base, versions))
        except OSError:  # a versions directory is gone
            return None, "stale", 0
        if unsure is None or any(
            file_checksum(os.path.join(base, name)) != recorded[name]["sha256"] for name in unsure
        ):
            return None, "stale", len(unsure or ())
        revisions = {
            item["id"]: Revision(
                item["id"],
                tuple(item["down"]),
                item["message"],
                f"{base}/{item['path']}",  # relative, as build() wrote it
                tuple(sorted((k, float(v)) for k, v in item["options"].items())),
                item["checksum"],
                tuple(item.get("branches", ())),
                item["phase"],
                item.get("lock_schedule"),
            )
            for item in document["revisions"]
        }
        return Scripts(tuple(document["heads"]), revisions, tuple(versions)), "ok", len(unsure)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, "unreadable", 0
