"""The manifest: what the migration scripts say (heads, the revision graph, messages,
checksums), written at image build time, so that a runner with nothing to do never imports a
revision file, Alembic or SQLAlchemy.

The manifest records a hash of every revision file; at start-up the runner re-hashes the
files (reading them, not importing them) and ignores a manifest that no longer matches,
falling back to loading the scripts (slower, same result).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from runner.scripts import Revision, Scripts

FORMAT = 1
FILENAME = "migration-manifest.json"


def default_path(alembic_config: Path) -> Path:
    return alembic_config.parent / FILENAME


def scripts_hash(versions: list[Path]) -> str:
    """A hash over the names and contents of every ``*.py`` file in ``versions``."""
    digest = hashlib.sha256()
    for directory in versions:
        for path in sorted(directory.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build(scripts: Scripts, path: Path) -> dict[str, Any]:
    """The manifest document for ``scripts``, with paths relative to ``path``'s directory."""
    base = path.parent.resolve()
    versions = [Path(v) for v in scripts.versions]
    return {
        "format": FORMAT,
        "scripts_hash": scripts_hash(versions),
        "versions": [_relative(v, base) for v in versions],
        "heads": list(scripts.heads),
        "revisions": [{"id": rev.id, "down": list(rev.down), "message": rev.message,
                       "path": _relative(Path(rev.path), base), "checksum": rev.checksum,
                       "options": dict(rev.options)} for rev in scripts.revisions.values()],
    }


def write(scripts: Scripts, path: Path) -> dict[str, Any]:
    document = build(scripts, path)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return document


def read(path: Path) -> tuple[Scripts | None, str]:
    """The scripts as the manifest describes them, and ``"ok"``; or None and why not
    (``"absent"``, ``"stale"``, ``"unreadable"``). Never raises for a bad manifest."""
    if not path.is_file():
        return None, "absent"
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            return None, "unreadable"
        base = path.parent.resolve()
        versions = [(base / v).resolve() for v in document["versions"]]
        if not all(v.is_dir() for v in versions) or scripts_hash(versions) != document["scripts_hash"]:
            return None, "stale"
        revisions = {
            item["id"]: Revision(item["id"], tuple(item["down"]), item["message"],
                                 os.path.join(base, item["path"]),  # no resolve(): 500 syscalls
                                 tuple(sorted((k, float(v)) for k, v in item["options"].items())),
                                 item["checksum"])
            for item in document["revisions"]}
        return Scripts(tuple(document["heads"]), revisions, tuple(str(v) for v in versions)), "ok"
    except (OSError, ValueError, KeyError, TypeError):
        return None, "unreadable"


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())



