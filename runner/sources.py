"""Where verbs get the scripts from (a current manifest, or Alembic loading every file),
and the check of applied revisions against the checksums the ledger recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner import heap, manifest, scripts
from runner.errors import EditedMigration
from runner.ledger import edited
from runner.plan import applied
from runner.session import Session
from runner.settings import Settings


def load(settings: Settings, log: Any, checksums: dict[str, str] | None = None) -> scripts.Loaded:
    """Load the scripts through Alembic (imports every revision file); ``checksums`` from a
    current manifest spare reading the files again."""
    with heap.long_lived():  # Alembic, SQLAlchemy and every revision: here until exit
        loaded = scripts.load(settings.alembic_config, checksums)
    log.info("scripts.loaded", source="files", revisions=len(loaded.scripts.revisions),
             heads=list(loaded.scripts.heads))
    return loaded


def manifest_path(settings: Settings) -> Path:
    return settings.migration_manifest or manifest.default_path(settings.alembic_config)


def describe(settings: Settings, log: Any) -> tuple[scripts.Scripts, scripts.Loaded | None]:
    """The scripts from a current manifest when there is one (no imports), else loaded."""
    path = manifest_path(settings)
    known, why, hashed = manifest.read(path)
    if known is not None:
        log.info("scripts.loaded", source="manifest", manifest=str(path),
                 revisions=len(known.revisions), heads=list(known.heads), files_hashed=hashed)
        return known, None
    if why != "absent":
        log.warning("manifest.ignored", manifest=str(path), reason=why,
                    detail="the scripts changed since it was written: run `migration-runner "
                    "manifest` when building the image")
    loaded = load(settings, log)
    return loaded.scripts, loaded


def verify_checksums(session: Session, known: scripts.Scripts, current: tuple[str, ...],
                     latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Compare applied revisions' files with the checksums the ledger recorded (``latest``).
    An edited applied migration is a warning, or an error with MIGRATION_STRICT_CHECKSUMS."""
    found = edited(latest, known.checksums(), applied(known.graph(), current))
    if not found:
        return found
    names = ", ".join(f"{e['revision']} ({known.revisions[e['revision']].path})" for e in found)
    message = (f"applied migration(s) edited since they were applied: {names}. Never edit an "
               "applied migration: restore the file and add a new revision for the change")
    if session.settings.migration_strict_checksums:
        raise EditedMigration(message, edited=found)
    session.log.warning("scripts.edited", message=message, edited=found)
    return found
