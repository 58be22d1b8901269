"""The read verbs: ``current``, ``check``, ``history``, ``heads``. Each returns a
:class:`Result` whose document is JSON-ready and whose text is the same for people; the
CLI prints it and maps its outcome to the exit code."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from runner.commands import from_settings
from runner.config.settings import Settings
from runner.errors import DatabaseAhead
from runner.observe.console import printable
from runner.outcome import Facts, Outcome, Result
from runner.plan import applied, expand_steps, plan_upgrade
from runner.scripts import load as scripts
from runner.scripts import source as sources

if TYPE_CHECKING:
    from runner.observe.logs import Log


def heads(settings: Settings, *, log: Log) -> Result:
    """The heads of the scripts; :attr:`Outcome.SEVERAL_HEADS` when there is more than one."""
    loaded = sources.load(from_settings.project(settings), log)
    rows = [describe(loaded.scripts.revisions[h]) for h in loaded.scripts.heads]
    text = "\n".join(f"{r['revision']}  {printable(r['message'])}  ({r['path']})" for r in rows)
    outcome = Outcome.OK
    if len(rows) > 1:
        outcome = Outcome.SEVERAL_HEADS
        text += '\nseveral heads: merge them with `migration-runner merge -m "merge heads"`'
    return Result(outcome, {"heads": rows, "single_head": len(rows) == 1}, text)


def current(settings: Settings, *, facts: Facts, log: Log) -> Result:
    """The database's revision, and whether it is at head."""
    state = _state(settings, facts=facts, log=log)
    rev = ", ".join(state["revision"]) or "(empty: no revision applied)"
    text = f"{rev}{' (head)' if state['at_head'] else ''}"
    if state["status"] == "behind" or state["status"] == "empty":
        phases = {row["revision"]: row["phase"] for row in state["revisions"]}
        text += f"\n{len(state['pending'])} pending: " + ", ".join(
            f"{rev} ({phases[rev]})" for rev in state["pending"]
        )
    elif state["status"] == "ahead":
        text += "\nthe database is ahead of these scripts (a newer release migrated it)"
    return Result(Outcome(state["status"]), state, text)


def history(settings: Settings, *, facts: Facts, log: Log) -> Result:
    """The migration timeline, oldest first, marking what the database has applied."""
    state = _state(settings, facts=facts, log=log)
    rows = state.pop("revisions")
    width = max((len(printable(r["message"])) for r in rows), default=0)
    lines = [f"{'':2}{'revision':<14}{'phase':<10}{'message':<{width + 2}}state"]
    for row in rows:
        marks = ["applied" if row["applied"] else "pending"]
        marks += [m for m in ("current", "head") if row[m]]
        marks += ["EDITED since applied"] if row["edited"] else []
        entry = row["ledger"]
        when = _when(entry) if entry else ""
        lines.append(
            f"{'●' if row['applied'] else '○'} {row['revision']:<14}{row['phase']:<10}"
            f"{printable(row['message']):<{width + 2}}{', '.join(marks)}{printable(when)}"
        )
    if state["status"] == "ahead":
        lines.append(f"! database at {', '.join(state['revision'])}: not in these scripts")
    return Result(Outcome(state["status"]), {**state, "revisions": rows}, "\n".join(lines))


def _state(settings: Settings, *, facts: Facts, log: Log) -> dict[str, Any]:
    """Where the database stands against the scripts, as plain data."""
    settings.connection_spec()
    known, _loaded = sources.scripts_for(
        from_settings.project(settings), settings.migration_manifest, log
    )
    with from_settings.session(settings, facts=facts, log=log) as session:
        revision = session.revision()
        entries = session.ledger.latest(session.conn)
        changed = sources.verify_checksums(
            known, revision, entries, strict=settings.migration_strict_checksums, log=log
        )
    facts.database_at(revision)
    graph = known.graph()
    head_set = set(known.heads)
    try:
        pending = plan_upgrade(revision, known.heads, graph).steps
        status = "at_head" if not pending else ("empty" if not revision else "behind")
        done = applied(graph, revision)
    except DatabaseAhead:
        pending, status, done = (), "ahead", set()
    edited_ids = {e["revision"] for e in changed}
    revisions = [
        {
            **describe(rev),
            "applied": rev.id in done,
            "current": rev.id in revision,
            "head": rev.id in head_set,
            "edited": rev.id in edited_ids,
            "ledger": _entry(entries.get(rev.id)),
        }
        for rev in known.revisions.values()
    ]
    contract = known.contract()
    return {
        "status": status,
        "revision": list(revision),
        "heads": list(known.heads),
        "at_head": status == "at_head",
        "pending": list(pending),
        #: what ``upgrade --phase expand`` would apply now
        "pending_expand": list(expand_steps(pending, contract)),
        "edited": changed,
        "revisions": revisions,
    }


def _entry(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ledger row as JSON-ready data."""
    if row is None:
        return None
    return {key: _json_value(value) for key, value in row.items() if key != "id"}


def _json_value(value: Any) -> Any:
    """Times in UTC (the session's TimeZone may be anything), as ISO 8601."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC)
        return value.isoformat()
    return value.isoformat() if hasattr(value, "isoformat") else value


def _when(entry: dict[str, Any]) -> str:
    """When and where a ledger row says its revision ran (a row may have no end time, or
    ``infinity`` / ``-infinity`` for one: a hand-edited or restored ledger, or an older
    runner's)."""
    finished = entry.get("finished_at")
    if not isinstance(finished, str):
        at = "(no end time)"
    elif finished.lstrip("-") == "infinity":
        at = finished
    else:
        at = f"{finished[:19].replace('T', ' ')} UTC"
    detail = f", {entry['detail']}" if entry.get("detail") else ""
    return f"  {entry['outcome']} {at} on {entry['ran_on']} ({entry['duration_ms']} ms{detail})"


def describe(rev: scripts.Revision) -> dict[str, Any]:
    return {
        "revision": rev.id,
        "down_revisions": list(rev.down),
        "message": rev.message,
        "path": rev.path,
        "phase": rev.phase,
    }
