"""The verbs of the pre-deployment checklist: ``verify``, ``lint``, and the lint gate of
``check --lint`` and ``upgrade --dry-run``. Each returns a :class:`Checked` report (a JSON-ready
document, the same as text, the exit code, and GitHub annotations the CLI prints when it runs
in GitHub Actions); a failed checklist also logs its one ``error`` event.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from runner import render, scripts
from runner.catalog import qualified
from runner.commands import Report
from runner.errors import ExitCode
from runner.lint import LintResult, Thresholds, run_lint, table_sizes
from runner.plan import plan_upgrade
from runner.record import Record
from runner.session import open_session
from runner.settings import Settings, parse_database_url
from runner.scratch import throwaway_database
from runner.verify import parse_skip, run_verify


@dataclasses.dataclass
class Checked(Report):
    #: GitHub Actions workflow commands (``::error file=...``), printed only under Actions
    annotations: list[str] = dataclasses.field(default_factory=list)


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(settings.migration_lint_small_table_rows,
                      settings.migration_lint_small_table_bytes,
                      settings.migration_lint_large_table_rows,
                      settings.migration_lint_large_table_bytes)


def _loaded(settings: Settings, log: Any) -> scripts.Loaded:
    loaded = scripts.load(settings.alembic_config)
    log.info("scripts.loaded", source="files", revisions=len(loaded.scripts.revisions),
             heads=list(loaded.scripts.heads))
    return loaded


def verify(settings: Settings, *, database_url: str | None, skip: list[str], since: str | None,
           exclude: list[str], record: Record, log: Any) -> Checked:
    """Every check not skipped, against ``database_url`` (an empty scratch database) or a
    throwaway PostgreSQL of its own. Exit 0 when all pass, 20 otherwise."""
    skipped = parse_skip(skip)
    loaded = _loaded(settings, log)
    schema = settings.migration_version_table_schema or "public"
    bookkeeping = (qualified(schema, settings.migration_version_table),
                   qualified(schema, settings.migration_ledger_table))

    def lint(loaded: scripts.Loaded, since: str | None) -> LintResult:
        return run_lint(loaded, since=since, exclude=_excluded(exclude))

    def check(url: str) -> Any:
        return run_verify(loaded, url, skip=skipped, since=since, lint=lint, bookkeeping=bookkeeping)

    if database_url:
        result = check(parse_database_url(database_url).url(hide_password=False))
    else:
        with throwaway_database() as url:
            result = check(url)
    record.outcome = "passed" if result.ok else "failed"
    code = ExitCode.OK if result.ok else ExitCode.VERIFY_FAILED
    if not result.ok:
        first = result.failures[0]
        log.error("error", error_code="verify_failed", exit_code=int(code),
                  message=f"verify failed: {len(result.failures)} failure(s); first "
                  f"[{first.check}]: {first.message}",
                  failed_checks=sorted({f.check for f in result.failures}))
    return Checked(result.document(), render.verify_text(result), code,
                   list(render.verify_annotations(result)))


def lint(settings: Settings, *, since: str | None, exclude: list[str], record: Record,
         log: Any) -> Checked:
    """Every revision (or those after ``since``), offline. Exit 0, or 21 on an error."""
    result = run_lint(_loaded(settings, log), since=since, exclude=_excluded(exclude))
    record.outcome = "passed" if result.ok else "failed"
    return _linted(result, ExitCode.OK, log)


def lint_pending(settings: Settings, target: str, *, record: Record, log: Any) -> tuple[dict[str, Any], LintResult]:
    """The revisions an upgrade to ``target`` would apply, linted against the live database's
    table sizes. No lock is taken and nothing is written."""
    loaded = _loaded(settings, log)
    heads = scripts.resolve_target(loaded.scripts, loaded.directory, target)
    with open_session(settings, record=record, log=log) as session:
        current = session.revision()
        record.from_revision = record.to_revision = list(current)
        plan = plan_upgrade(current, heads, loaded.scripts.graph())
        sizes = table_sizes(session.conn)
    result = run_lint(loaded, revisions=plan.pending, sizes=sizes, thresholds=thresholds(settings))
    return {"from_revision": list(current), "target": list(heads), "pending": list(plan.pending)}, result


def dry_run(settings: Settings, target: str, *, record: Record, log: Any) -> Checked:
    """``upgrade --dry-run``: what would be applied, linted by size; applies nothing."""
    plan, result = lint_pending(settings, target, record=record, log=log)
    record.outcome = "dry_run"
    pending = ", ".join(plan["pending"]) or "nothing: the database is at the target"
    report = _linted(result, ExitCode.OK, log)
    report.document = {**plan, "lint": report.document}
    report.text = f"would apply: {pending}\n{report.text}"
    return report


def check_with_lint(settings: Settings, report: Report, *, record: Record, log: Any) -> Checked:
    """``check --lint``: ``check``'s report, plus its pending revisions linted by size.
    An error-level finding gives 21; otherwise ``check``'s own code."""
    if not report.document.get("pending"):
        return Checked(report.document, report.text, report.exit_code)
    _plan, result = lint_pending(settings, "heads", record=record, log=log)
    linted = _linted(result, report.exit_code, log)
    return Checked({**report.document, "lint": linted.document}, f"{report.text}\n{linted.text}",
                   linted.exit_code, linted.annotations)


def _linted(result: LintResult, code: int, log: Any) -> Checked:
    if not result.ok:
        code = ExitCode.LINT_FAILED
        first = result.errors()[0]
        log.error("error", error_code="lint_failed", exit_code=int(code),
                  message=f"{len(result.errors())} error-level lint finding(s); first: "
                  f"{first.summary()}. Fix: {first.fix}")
    return Checked(result.document(), render.lint_text(result), code,
                   list(render.lint_annotations(result)))


def _excluded(exclude: list[str]) -> tuple[str, ...]:
    from runner.lint.squawk import DEFAULT_EXCLUDE

    return DEFAULT_EXCLUDE + tuple(exclude)
