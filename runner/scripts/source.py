"""Where verbs get the scripts from (a current manifest, or Alembic loading every file),
and the check of applied revisions against the checksums the ledger recorded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.database.ledger import edited
from runner.errors import EditedMigration
from runner.plan import applied
from runner.process import gc_freeze as heap
from runner.process import interrupt
from runner.scripts import load as scripts
from runner.scripts import manifest
from runner.scripts.alembic_config import Project

if TYPE_CHECKING:
    from runner.observe.logs import Log


def load(project: Project, log: Log, checksums: dict[str, str] | None = None) -> scripts.Loaded:
    """Load the scripts through Alembic (imports every revision file, after the project's
    bootstrap); ``checksums`` from a current manifest spare reading the files again."""
    with heap.long_lived():  # Alembic, SQLAlchemy and every revision: here until exit
        loaded = scripts.load(project, checksums)
    replaced = interrupt.reclaim()  # the bootstrap's and the revisions' imports have run
    if replaced:
        log.warning("signals.reclaimed", **interrupt.reclaimed_warning(replaced))
    log.info(
        "scripts.loaded",
        source="files",
        revisions=len(loaded.scripts.revisions),
        heads=list(loaded.scripts.heads),
    )
    return loaded


def manifest_path(project: Project, manifest_setting: Path | None) -> Path:
    """MIGRATION_MANIFEST when set, else the manifest beside ``project``'s configuration."""
    return manifest_setting or manifest.default_path(project.config)


def scripts_for(
    project: Project, manifest_setting: Path | None, log: Log
) -> tuple[scripts.Scripts, scripts.Loaded | None]:
    """The scripts from a current manifest when there is one (no imports), else loaded."""
    path = manifest_path(project, manifest_setting)
    known, why, hashed = manifest.read(path)
    if known is not None:
        log.info(
            "scripts.loaded",
            source="manifest",
            manifest=str(path),
            revisions=len(known.revisions),
            heads=list(known.heads),
            files_hashed=hashed,
        )
        return known, None
    if why != "absent":
        log.warning(
            "manifest.ignored",
            manifest=str(path),
            reason=why,
            detail=(
                "it does not describe its own files (hand-edited, or written by another version)"
                if why == "inconsistent"
                else "the scripts changed since it was written"
            )
            + ": run `migration-runner manifest` when building the image",
        )
    loaded = load(project, log)
    return loaded.scripts, loaded


def verify_checksums(
    known: scripts.Scripts,
    current: tuple[str, ...],
    latest: dict[str, dict[str, Any]],
    *,
    strict: bool,
    log: Log,
) -> list[dict[str, Any]]:
    """Compare applied revisions' files with the checksums the ledger recorded (``latest``).
    An edited applied migration is a warning, or (``strict``: MIGRATION_STRICT_CHECKSUMS) an
    :class:`~runner.errors.EditedMigration` error."""
    found = edited(latest, known.checksums(), applied(known.graph(), current))
    if not found:
        return found
    names = ", ".join(f"{e['revision']} ({known.revisions[e['revision']].path})" for e in found)
    message = (
        f"applied migration(s) edited since they were applied: {names}. Never edit an "
        "applied migration: restore the file and add a new revision for the change"
    )
    if strict:
        raise EditedMigration(message, edited=found)
    log.warning("scripts.edited", message=message, edited=found)
    return found
