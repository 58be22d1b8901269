"""The script-writing and offline verbs: ``sql``, ``manifest``, ``merge``, ``revision``."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner.commands import from_settings
from runner.config.settings import Settings
from runner.errors import ConfigError, RunnerError, ScriptsInvalid
from runner.observe import descriptors
from runner.outcome import Facts, Outcome, Result
from runner.scripts import load as scripts
from runner.scripts import manifest
from runner.scripts import source as sources

if TYPE_CHECKING:
    from runner.observe.logs import Log


def sql(settings: Settings, span: str, *, log: Log) -> Result:
    """The SQL an upgrade over ``span`` (``[FROM:]TO``) would run, without connecting."""
    from alembic import command

    loaded = sources.load(from_settings.project(settings), log)
    buffer = io.StringIO()
    loaded.config.output_buffer = buffer
    scripts.set_url(loaded.config, _offline_url(settings))
    try:
        with descriptors.captured():  # env.py and the revisions run (offline)
            command.upgrade(loaded.config, span, sql=True)
    except Exception as exc:  # Alembic's CommandError for a bad range, and the like
        raise ConfigError(f"cannot render SQL for {span!r}: {exc}") from None
    return Result(
        Outcome.OK, {"sql": buffer.getvalue(), "span": span}, buffer.getvalue().rstrip("\n")
    )


def write_manifest(settings: Settings, *, log: Log) -> Result:
    """Write the manifest (at image build time) so that no-op runs import nothing."""
    loaded = sources.load(from_settings.project(settings), log)
    path = sources.manifest_path(from_settings.project(settings), settings.migration_manifest)
    try:
        document = manifest.write(loaded.scripts, path)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the manifest to {path}: {exc.strerror}. Create the directory or "
            "make it writable, or set MIGRATION_MANIFEST to a path that is"
        ) from None
    return Result(
        Outcome.OK,
        {
            "manifest": str(path),
            "heads": document["heads"],
            "revisions": len(document["revisions"]),
        },
        f"wrote {path} ({len(document['revisions'])} revisions, heads "
        f"{', '.join(document['heads']) or '(none)'})",
    )


def merge(settings: Settings, message: str, *, log: Log) -> Result:
    """A revision merging every head."""
    from alembic import command

    loaded = sources.load(from_settings.project(settings), log)
    with descriptors.captured():  # the revisions are imported
        if len(loaded.scripts.heads) < 2:
            raise ConfigError("nothing to merge: the scripts have a single head")
        return _written(command.merge(loaded.config, "heads", message=message))


def revision(
    settings: Settings, message: str, autogenerate: bool, *, facts: Facts, log: Log
) -> Result:
    """A new revision file; with ``autogenerate``, diffed against the database."""
    from alembic import command

    loaded = sources.load(from_settings.project(settings), log)
    if not autogenerate:
        with descriptors.captured():  # the revisions are imported: their raw output too
            several = len(loaded.scripts.heads) > 1  # the scripts' state: exit 7, as elsewhere
            with _refused_by_alembic(
                "with several heads, merge them first: migration-runner merge",
                ScriptsInvalid if several else ConfigError,
            ):
                return _written(command.revision(loaded.config, message=message))
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    with from_settings.session(settings, facts=facts, log=log) as session:
        session.conn.autocommit = False
        engine = create_engine(
            "postgresql+psycopg://", creator=lambda: session.conn, poolclass=StaticPool
        )
        with engine.connect() as connection:
            loaded.config.attributes["connection"] = connection
            with (
                _refused_by_alembic(
                    "--autogenerate needs the database at head (migration-runner upgrade) and an "
                    "env.py that passes target_metadata to context.configure()"
                ),
                descriptors.captured(),
            ):  # env.py runs
                script = command.revision(loaded.config, message=message, autogenerate=True)
    return _written(script)


@contextlib.contextmanager
def _refused_by_alembic(advice: str, kind: type[RunnerError] = ConfigError) -> Iterator[None]:
    """Alembic's refusals (``CommandError``: several heads, a database not at head for
    ``--autogenerate``, an env.py without ``target_metadata``) are the project's state or the
    command line's, not a bug: ``kind`` (exit 2, or 7 for several heads) with Alembic's own
    words."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise kind(f"Alembic refused to write the revision: {exc} ({advice})") from None


def _written(script: Any) -> Result:
    items = script if isinstance(script, list) else [script]
    rows = [
        {"revision": s.revision, "path": s.path, "message": (s.doc or "").strip()}
        for s in items
        if s is not None
    ]
    return Result(Outcome.OK, {"written": rows}, "\n".join(f"wrote {r['path']}" for r in rows))


def _offline_url(settings: Settings) -> str:
    """The dialect for offline SQL: the configured URL if any (never connected to)."""
    try:
        return settings.connection_spec().url(hide_password=True)
    except ConfigError:
        return "postgresql+psycopg://offline@localhost/offline"
