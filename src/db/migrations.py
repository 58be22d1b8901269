"""Where the database stands relative to the migrations in ``alembic/versions``.

For the service's health check, without the migration runner (the service's image does not
ship it): the heads come from Alembic's ``ScriptDirectory``, the database's revisions from
``alembic_version``, and :func:`migration_status` decides, as a pure function.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"

Status = Literal["at_head", "behind", "empty", "ahead"]


@cache
def script_heads(ini: Path = ALEMBIC_INI) -> tuple[frozenset[str], frozenset[str]]:
    """``(heads, every known revision)`` of the scripts; loads them once per process."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    # the revision files only: not from_config, whose sys.path set-up is env.py's business
    scripts = ScriptDirectory(Config(str(ini)).get_main_option("script_location"))
    return (
        frozenset(scripts.get_heads()),
        frozenset(rev.revision for rev in scripts.walk_revisions()),
    )


async def database_revisions(conn: AsyncConnection) -> frozenset[str]:
    """The revisions in ``alembic_version``; empty if the table does not exist."""
    if (await conn.execute(text("SELECT to_regclass('alembic_version')"))).scalar() is None:
        return frozenset()
    return frozenset(
        (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars()
    )


def migration_status(
    current: Collection[str], heads: Collection[str], known: Collection[str]
) -> Status:
    """``at_head``; ``empty`` (nothing applied); ``ahead`` when the database holds a revision
    these scripts do not know (a newer deploy migrated it: expand-only migrations keep this
    code working, so it still serves); otherwise ``behind`` (this code expects schema the
    database lacks)."""
    if not current:
        return "empty"
    if set(current) == set(heads):
        return "at_head"
    if not set(current) <= set(known):
        return "ahead"
    return "behind"
