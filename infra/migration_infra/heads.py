"""The migrations' heads, read from the revision files without importing them.

The gate re-runs when the heads change. Importing the revision files would need the service's
code and Alembic in infra's environment, so the module-level `revision` and `down_revision`
assignments are read with `ast` instead (both `x = ...` and `x: T = ...`, as Alembic's templates
write them).
"""

from __future__ import annotations

import ast
from pathlib import Path


class HeadsError(ValueError):
    """The versions directory is missing, or a revision file has no literal `revision` id."""


def _literal_ids(node: ast.expr | None) -> tuple[str, ...]:
    if node is None:
        return ()
    value = ast.literal_eval(node)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)


def read_revision(path: Path) -> tuple[str, tuple[str, ...]]:
    """(revision, down_revisions) of one revision file, read with `ast`."""
    assigned: dict[str, ast.expr | None] = {}
    for stmt in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name):
            assigned[target.id] = value
    try:
        revision = _literal_ids(assigned.get("revision"))
        down = _literal_ids(assigned.get("down_revision"))
    except ValueError as exc:
        raise HeadsError(f"{path}: revision ids must be literals ({exc})") from exc
    if len(revision) != 1:
        raise HeadsError(f"{path}: no `revision = \"<id>\"` at module level")
    return revision[0], down


def migration_heads(versions_dir: str | Path) -> tuple[str, ...]:
    """The sorted heads (revisions nothing revises) of the `*.py` files in `versions_dir`
    and its subdirectories. Raises `HeadsError` if the directory does not exist."""
    root = Path(versions_dir)
    if not root.is_dir():
        raise HeadsError(f"{root}: no such migrations directory (set migrationsDir)")
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        if path.name.startswith("__"):
            continue
        revision, down = read_revision(path)
        revisions.add(revision)
        revised.update(down)
    return tuple(sorted(revisions - revised))
