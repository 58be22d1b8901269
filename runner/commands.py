"""The verbs. Each is a short function over three nouns: the scripts (what migrations exist),
the session (where the database is, and its lock) and the record (what happened).

Writing verbs (``upgrade``, ``downgrade``, ``stamp``) raise a :class:`RunnerError` on
failure and fill the :class:`Record`. Read verbs return a :class:`Report`: a JSON-ready
document, the same for people as text, and the exit code.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from runner import heap, manifest, scripts
from runner.errors import ConfigError, DatabaseAhead, EditedMigration, ExitCode
from runner.interrupt import Interrupt
from runner.ledger import edited
from runner.migrate import Timeouts, run_steps, run_with_retries
from runner.plan import Plan, applied, plan_upgrade
from runner.record import Record
from runner.session import Session, migration_lock, open_session
from runner.settings import Settings


@dataclasses.dataclass
class Report:
    document: dict[str, Any]
    text: str
    exit_code: int = ExitCode.OK


# --- writing verbs --------------------------------------------------------------------------

def upgrade(settings: Settings, target: str, *, record: Record, interrupt: Interrupt,
            log: Any) -> None:
    """Bring the database to ``target``: no lock if it is already there; otherwise take the
    lock, read again, and apply what is still pending."""
    settings.connection_spec()  # a configuration error comes before anything else
    known, loaded = _describe_scripts(settings, log)
    target_heads = scripts.resolve_exact(known, target)
    if target_heads is None:  # a prefix, or no head: Alembic resolves (or explains) it
        loaded = loaded or _load(settings, log, known.checksums())
        known = loaded.scripts
        target_heads = scripts.resolve_target(known, loaded.directory, target)

    def plan(current: tuple[str, ...], locked: bool) -> Plan | None:
        record.from_revision = record.to_revision = list(current)
        try:
            found = plan_upgrade(current, target_heads, known.graph())
        except DatabaseAhead as ahead:
            if not settings.migration_allow_database_ahead:
                raise
            log.warning("upgrade.database_ahead", revision=list(current), locked=locked,
                        detail=ahead.message + " (accepted: MIGRATION_ALLOW_DATABASE_AHEAD)")
            record.outcome = "database_ahead"
            return None
        if found.up_to_date:
            log.info("upgrade.up_to_date", revision=list(current), locked=locked)
            record.outcome = "up_to_date"
            return None
        return found

    with open_session(settings, record=record, log=log) as session:
        current = session.revision()
        _verify_checksums(session, known, current, session.ledger.latest(session.conn))
        if plan(current, locked=False) is None:
            return
        # only now: Alembic, SQLAlchemy, the revisions
        loaded = loaded or _load(settings, log, known.checksums())
        with migration_lock(session, record=record, interrupt=interrupt):
            found = plan(session.revision(), locked=True)
            if found is None:
                return
            log.info("upgrade.plan", from_revision=list(found.current), target=list(found.target),
                     pending=list(found.pending))
            _run(session, loaded, "upgrade", target, found.current, record, interrupt)
            record.outcome = "migrated"


def downgrade(settings: Settings, target: str, *, record: Record, interrupt: Interrupt,
              log: Any) -> None:
    """Roll back to ``target`` (a revision, ``-N`` or ``base``), under the lock."""
    _move(settings, "downgrade", target, "downgraded", record=record, interrupt=interrupt, log=log)


def stamp(settings: Settings, target: str, *, record: Record, interrupt: Interrupt,
          log: Any) -> None:
    """Set the version to ``target`` without running migrations, under the lock."""
    _move(settings, "stamp", target, "stamped", record=record, interrupt=interrupt, log=log)


def _move(settings: Settings, kind: str, target: str, outcome: str, *, record: Record,
          interrupt: Interrupt, log: Any) -> None:
    settings.connection_spec()
    loaded = _load(settings, log)
    with open_session(settings, record=record, log=log) as session, \
            migration_lock(session, record=record, interrupt=interrupt):
        current = session.revision()
        record.from_revision = list(current)
        _run(session, loaded, kind, target, current, record, interrupt)
        record.outcome = outcome


def _run(session: Session, loaded: scripts.Loaded, kind: str, target: str,
         current: tuple[str, ...], record: Record, interrupt: Interrupt) -> None:
    """Apply ``kind`` steps from ``current`` (read under the lock) to ``target``."""
    settings = session.settings
    ledger = session.ledger
    adopted = ledger.ensure(session.conn, applied(loaded.scripts.graph(), current),
                            loaded.scripts.checksums())
    if adopted or not current:
        session.log.info("ledger.ready", table=ledger.qualified, adopted=adopted)
    timeouts = Timeouts(settings.migration_ddl_lock_timeout, settings.migration_statement_timeout)
    record.to_revision = None  # unknown while revisions run: never report a stale one
    run_with_retries(lambda: run_steps(
        session.conn, loaded, kind, target, table=session.table, timeouts=timeouts,
        url=session.spec.url(hide_password=False), open_connection=session.open_connection,
        interrupt=interrupt, log=session.log,
        on_committed=lambda step: record.applied.append(step.revision), ledger=ledger),
        retries=settings.migration_ddl_lock_retries, log=session.log)
    with interrupt.deferred():  # the work is done: a signal now must not hide where it ended
        record.to_revision = list(session.revision())


def _verify_checksums(session: Session, known: scripts.Scripts, current: tuple[str, ...],
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


def _load(settings: Settings, log: Any, checksums: dict[str, str] | None = None) -> scripts.Loaded:
    """Load the scripts through Alembic (imports every revision file); ``checksums`` from a
    current manifest spare reading the files again."""
    with heap.long_lived():  # Alembic, SQLAlchemy and every revision: here until exit
        loaded = scripts.load(settings.alembic_config, checksums)
    log.info("scripts.loaded", source="files", revisions=len(loaded.scripts.revisions),
             heads=list(loaded.scripts.heads))
    return loaded


def _manifest_path(settings: Settings) -> Path:
    return settings.migration_manifest or manifest.default_path(settings.alembic_config)


def _describe_scripts(settings: Settings, log: Any) -> tuple[scripts.Scripts, scripts.Loaded | None]:
    """The scripts from a current manifest when there is one (no imports), else loaded."""
    path = _manifest_path(settings)
    known, why, hashed = manifest.read(path)
    if known is not None:
        log.info("scripts.loaded", source="manifest", manifest=str(path),
                 revisions=len(known.revisions), heads=list(known.heads), files_hashed=hashed)
        return known, None
    if why != "absent":
        log.warning("manifest.ignored", manifest=str(path), reason=why,
                    detail="the scripts changed since it was written: run `migration-runner "
                    "manifest` when building the image")
    loaded = _load(settings, log)
    return loaded.scripts, loaded


# --- read verbs ---------------------------------------------------------------------------

def heads(settings: Settings, *, log: Any) -> Report:
    """The heads of the scripts; exit 7 when there is more than one."""
    loaded = _load(settings, log)
    rows = [_describe(loaded.scripts.revisions[h]) for h in loaded.scripts.heads]
    text = "\n".join(f"{r['revision']}  {r['message']}  ({r['path']})" for r in rows)
    code = ExitCode.OK
    if len(rows) > 1:
        code = ExitCode.SCRIPTS_INVALID
        text += "\nseveral heads: merge them with `migration-runner merge -m \"merge heads\"`"
    return Report({"heads": rows, "single_head": len(rows) == 1}, text, code)


def current(settings: Settings, *, record: Record, log: Any) -> Report:
    """The database's revision, and whether it is at head."""
    state = _state(settings, record=record, log=log)
    rev = ", ".join(state["revision"]) or "(empty: no revision applied)"
    text = f"{rev}{' (head)' if state['at_head'] else ''}"
    if state["status"] == "behind" or state["status"] == "empty":
        text += f"\n{len(state['pending'])} pending: {', '.join(state['pending'])}"
    elif state["status"] == "ahead":
        text += "\nthe database is ahead of these scripts (a newer release migrated it)"
    return Report(state, text)


def check(settings: Settings, *, record: Record, log: Any) -> Report:
    """Exit 0 only if the database is exactly at head; 11 when revisions are pending (or it is
    empty), 8 when it is ahead of the scripts. For CI gates and readiness checks."""
    report = current(settings, record=record, log=log)
    status = report.document["status"]
    report.exit_code = {"at_head": ExitCode.OK, "behind": ExitCode.NOT_AT_HEAD,
                        "empty": ExitCode.NOT_AT_HEAD, "ahead": ExitCode.DATABASE_AHEAD}[status]
    return report


def history(settings: Settings, *, record: Record, log: Any) -> Report:
    """The migration timeline, oldest first, marking what the database has applied."""
    state = _state(settings, record=record, log=log)
    rows = state.pop("revisions")
    width = max((len(r["message"]) for r in rows), default=0)
    lines = [f"{'':2}{'revision':<14}{'message':<{width + 2}}state"]
    for row in rows:
        marks = ["applied" if row["applied"] else "pending"]
        marks += [m for m in ("current", "head") if row[m]]
        marks += ["EDITED since applied"] if row["edited"] else []
        entry = row["ledger"]
        when = (f"  {entry['outcome']} {entry['finished_at'][:19].replace('T', ' ')} UTC on "
                f"{entry['ran_on']} ({entry['duration_ms']} ms)") if entry else ""
        lines.append(f"{'●' if row['applied'] else '○'} {row['revision']:<14}"
                     f"{row['message']:<{width + 2}}{', '.join(marks)}{when}")
    if state["status"] == "ahead":
        lines.append(f"! database at {', '.join(state['revision'])}: not in these scripts")
    return Report({**state, "revisions": rows}, "\n".join(lines))


def _state(settings: Settings, *, record: Record, log: Any) -> dict[str, Any]:
    """Where the database stands against the scripts, as plain data."""
    settings.connection_spec()
    known, _loaded = _describe_scripts(settings, log)
    with open_session(settings, record=record, log=log) as session:
        revision = session.revision()
        entries = session.ledger.latest(session.conn)
        changed = _verify_checksums(session, known, revision, entries)
    record.from_revision = record.to_revision = list(revision)
    graph = known.graph()
    head_set = set(known.heads)
    try:
        pending = plan_upgrade(revision, known.heads, graph).pending
        status = "at_head" if not pending else ("empty" if not revision else "behind")
        done = applied(graph, revision)
    except DatabaseAhead:
        pending, status, done = (), "ahead", set()
    edited_ids = {e["revision"] for e in changed}
    revisions = [{**_describe(rev), "applied": rev.id in done, "current": rev.id in revision,
                  "head": rev.id in head_set, "edited": rev.id in edited_ids,
                  "ledger": _entry(entries.get(rev.id))}
                 for rev in known.revisions.values()]
    record.outcome = status
    return {"status": status, "revision": list(revision), "heads": list(known.heads),
            "at_head": status == "at_head", "pending": list(pending), "edited": changed,
            "revisions": revisions}


def _entry(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ledger row as JSON-ready data."""
    if row is None:
        return None
    return {key: (value.isoformat() if hasattr(value, "isoformat") else value)
            for key, value in row.items() if key != "id"}


def _describe(rev: scripts.Revision) -> dict[str, Any]:
    return {"revision": rev.id, "down_revisions": list(rev.down), "message": rev.message,
            "path": rev.path}


# --- script-writing and offline verbs -------------------------------------------------------

def sql(settings: Settings, span: str, *, log: Any) -> Report:
    """The SQL an upgrade over ``span`` (``[FROM:]TO``) would run, without connecting."""
    from alembic import command

    loaded = _load(settings, log)
    buffer = io.StringIO()
    loaded.config.output_buffer = buffer
    scripts.set_url(loaded.config, _offline_url(settings))
    try:
        command.upgrade(loaded.config, span, sql=True)
    except Exception as exc:  # Alembic's CommandError for a bad range, and the like
        raise ConfigError(f"cannot render SQL for {span!r}: {exc}") from None
    return Report({"sql": buffer.getvalue(), "span": span}, buffer.getvalue().rstrip("\n"))


def write_manifest(settings: Settings, *, log: Any) -> Report:
    """Write the manifest (at image build time) so that no-op runs import nothing."""
    loaded = _load(settings, log)
    path = _manifest_path(settings)
    document = manifest.write(loaded.scripts, path)
    return Report({"manifest": str(path), "heads": document["heads"],
                   "revisions": len(document["revisions"])},
                  f"wrote {path} ({len(document['revisions'])} revisions, heads "
                  f"{', '.join(document['heads']) or '(none)'})")


def merge(settings: Settings, message: str, *, log: Any) -> Report:
    """A revision merging every head."""
    from alembic import command

    loaded = _load(settings, log)
    if len(loaded.scripts.heads) < 2:
        raise ConfigError("nothing to merge: the scripts have a single head")
    script = command.merge(loaded.config, "heads", message=message)
    return _written(script)


def revision(settings: Settings, message: str, autogenerate: bool, *, record: Record,
             log: Any) -> Report:
    """A new revision file; with ``autogenerate``, diffed against the database."""
    from alembic import command

    loaded = _load(settings, log)
    if not autogenerate:
        return _written(command.revision(loaded.config, message=message))
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    with open_session(settings, record=record, log=log) as session:
        session.conn.autocommit = False
        engine = create_engine("postgresql+psycopg://", creator=lambda: session.conn,
                               poolclass=StaticPool)
        with engine.connect() as connection:
            loaded.config.attributes["connection"] = connection
            script = command.revision(loaded.config, message=message, autogenerate=True)
    return _written(script)


def _written(script: Any) -> Report:
    items = script if isinstance(script, list) else [script]
    rows = [{"revision": s.revision, "path": s.path, "message": (s.doc or "").strip()}
            for s in items if s is not None]
    return Report({"written": rows}, "\n".join(f"wrote {r['path']}" for r in rows))


def _offline_url(settings: Settings) -> str:
    """The dialect for offline SQL: the configured URL if any (never connected to)."""
    try:
        return settings.connection_spec().url(hide_password=True)
    except ConfigError:
        return "postgresql+psycopg://offline@localhost/offline"

