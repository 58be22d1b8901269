"""The verbs of the pre-deployment checklist: ``verify``, ``lint``, and the lint gate of
``check --lint`` and ``upgrade --dry-run``. Each returns a :class:`Result` (a JSON-ready
document, the same as text, and GitHub annotations the CLI prints when it runs in GitHub
Actions); the CLI maps its outcome to the exit code. A failed checklist also logs its one
``error`` event, naming the first thing to fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.checklist import render
from runner.checklist.lint import LintResult, Thresholds, run_lint, table_sizes
from runner.checklist.lint.squawk import DEFAULT_EXCLUDE
from runner.checklist.schema_snapshot import qualified
from runner.checklist.scratch import throwaway_database
from runner.checklist.verify import parse_skip, run_verify
from runner.commands import from_settings
from runner.config.database_url import parse_database_url
from runner.config.settings import Settings
from runner.errors import DatabaseAhead, ExitCode
from runner.execution.output_capture import OutputCapture
from runner.outcome import Facts, Outcome, Result
from runner.plan import plan_phase, plan_upgrade
from runner.scripts import source as sources
from runner.scripts.load import resolve_target

if TYPE_CHECKING:
    from runner.observe.logs import Log


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        settings.migration_lint_small_table_rows,
        settings.migration_lint_small_table_bytes,
        settings.migration_lint_large_table_rows,
        settings.migration_lint_large_table_bytes,
    )


def verify(
    settings: Settings,
    database_url: str | None,
    skip: list[str],
    since: str | None,
    exclude: list[str],
    *,
    log: Log,
) -> Result:
    """Every check not skipped, against ``database_url`` (an empty scratch database) or a
    throwaway PostgreSQL of its own: :attr:`Outcome.PASSED` or :attr:`Outcome.CHECKS_FAILED`."""
    skipped = parse_skip(skip)
    loaded = sources.load(from_settings.project(settings), log)
    schema = settings.migration_version_table_schema or "public"
    bookkeeping = (
        qualified(schema, settings.migration_version_table),
        qualified(schema, settings.migration_ledger_table),
    )

    def run_checks(spec: Any) -> Any:
        return run_verify(
            loaded,
            spec,
            skip=skipped,
            since=since,
            bookkeeping=bookkeeping,
            lint=lambda lo, after: run_lint(lo, since=after, exclude=_excluded(exclude)),
        )

    # what the project's code prints becomes revision.output events: stdout is the result's
    with OutputCapture(log, in_flight=lambda: None).active():
        if database_url:
            result = run_checks(parse_database_url(database_url))
        else:
            with throwaway_database(
                settings.migration_verify_cache_dir,
                say=lambda message: log.info("verify.server_binaries", message=message),
            ) as spec:
                result = run_checks(spec)
    if not result.ok:
        first = result.failures[0]
        log.error(
            "error",
            error_code="verify_failed",
            exit_code=int(ExitCode.VERIFY_FAILED),
            message=f"verify failed: {len(result.failures)} failure(s); first "
            f"[{first.check}]: {first.message}",
            failed_checks=sorted({f.check for f in result.failures}),
        )
    return Result(
        Outcome.PASSED if result.ok else Outcome.CHECKS_FAILED,
        result.document(),
        render.verify_text(result),
        tuple(render.verify_annotations(result)),
    )


def lint(settings: Settings, since: str | None, exclude: list[str], *, log: Log) -> Result:
    """Every revision (or those after ``since``), offline."""
    loaded = sources.load(from_settings.project(settings), log)
    with OutputCapture(log, in_flight=lambda: None).active():
        result = run_lint(loaded, since=since, exclude=_excluded(exclude))
    return _linted(result, Outcome.PASSED, log)


def lint_pending(
    settings: Settings, target: str, phase: str | None = None, *, facts: Facts, log: Log
) -> tuple[dict[str, Any], LintResult]:
    """The revisions an upgrade to ``target`` (in ``phase``) would apply, linted against the
    live database's table sizes. No lock is taken and nothing is written."""
    loaded = sources.load(from_settings.project(settings), log)
    resolve_target(loaded.scripts, loaded.directory, target)  # a bad target before connecting
    with from_settings.session(settings, facts=facts, log=log) as session:
        current = session.revision()
        facts.database_at(current)
        heads = resolve_target(loaded.scripts, loaded.directory, target, current)
        graph = loaded.scripts.graph()
        plan = plan_phase(
            plan_upgrade(current, heads, graph), graph, loaded.scripts.contract(), phase
        )
        sizes = table_sizes(session.conn)
    with OutputCapture(log, in_flight=lambda: None).active():
        result = run_lint(
            loaded, revisions=plan.steps, sizes=sizes, thresholds=thresholds(settings)
        )
    return {
        "from_revision": list(current),
        "target": list(heads),
        "pending": list(plan.steps),
        "held": list(plan.held),
    }, result


def dry_run(
    settings: Settings, target: str, phase: str | None = None, *, facts: Facts, log: Log
) -> Result:
    """``upgrade --dry-run``: what would be applied, linted by size; applies nothing."""
    facts.phase = phase
    try:
        plan, result = lint_pending(settings, target, phase, facts=facts, log=log)
    except DatabaseAhead as ahead:
        return _ahead(ahead, settings.migration_allow_database_ahead, facts, log)
    linted = _linted(result, Outcome.PASSED, log)
    pending = ", ".join(plan["pending"]) or "nothing: the database is at the target"
    return Result(
        linted.outcome,
        {**plan, "lint": linted.document},
        f"would apply: {pending}\n{linted.text}",
        linted.annotations,
    )


def _ahead(ahead: DatabaseAhead, accepted: bool, facts: Facts, log: Log) -> Result:
    """``upgrade --dry-run`` on a database ahead of the scripts: nothing would be applied;
    the upgrade would refuse (exit 8, its error logged) unless MIGRATION_ALLOW_DATABASE_AHEAD.
    The document is printed either way (``--json``: one document, whatever the verdict)."""
    if not accepted:
        log.error(
            "error",
            error_code=ahead.code,
            exit_code=int(ahead.exit_code),
            message=f"{ahead.message} (the upgrade would refuse: nothing was applied)",
        )
    document = {
        "from_revision": list(facts.from_revision or []),
        "target": [],
        "pending": [],
        "held": [],
        "ahead": True,
        "lint": None,
    }
    return Result(
        Outcome.DATABASE_AHEAD if accepted else Outcome.AHEAD,
        document,
        f"would apply: nothing: {ahead.message}",
    )


def check_at_head(
    settings: Settings, with_lint: bool, phase: str | None = None, *, facts: Facts, log: Log
) -> Result:
    """The ``check`` verb: :func:`~runner.commands.status.current`, whose outcome the CLI
    turns into 0 only if the database is exactly at head (11 when revisions are pending or it
    is empty, 8 when it is ahead). ``phase="expand"``: 0 too when only contract revisions
    are pending (:attr:`Outcome.CONTRACT_PENDING`), as ``upgrade --phase expand`` then has
    nothing to apply: also on an empty database whose first revision is a contract one. With ``--lint`` its pending revisions
    (the phase's) are linted by size too: an error-level finding makes the outcome
    :attr:`Outcome.LINT_ERRORS`."""
    from runner.commands import status

    facts.phase = phase
    checked = status.current(settings, facts=facts, log=log)
    document = checked.document or {}
    # the decision upgrade --phase expand makes (expand_steps, in runner.plan.plan_phase):
    # nothing of the phase to apply, whether the database is behind or empty
    pending = checked.outcome in (Outcome.BEHIND, Outcome.EMPTY)
    if phase == "expand" and pending and not document["pending_expand"]:
        checked = Result(
            Outcome.CONTRACT_PENDING,
            document,
            checked.text + "\nexpand phase done: only contract revisions are pending",
        )
    if not with_lint or not document.get("pending"):
        return checked
    _plan, result = lint_pending(settings, "heads", phase, facts=facts, log=log)
    linted = _linted(result, checked.outcome, log)
    return Result(
        linted.outcome,
        {**(checked.document or {}), "lint": linted.document},
        f"{checked.text}\n{linted.text}",
        linted.annotations,
    )


def _linted(result: LintResult, outcome: Outcome, log: Log) -> Result:
    if not result.ok:
        outcome = Outcome.LINT_ERRORS
        first = result.errors()[0]
        log.error(
            "error",
            error_code="lint_failed",
            exit_code=int(ExitCode.LINT_FAILED),
            message=f"{len(result.errors())} error-level lint finding(s); first: "
            f"{first.summary()}. Fix: {first.fix}",
        )
    return Result(
        outcome, result.document(), render.lint_text(result), tuple(render.lint_annotations(result))
    )


def _excluded(exclude: list[str]) -> tuple[str, ...]:
    return DEFAULT_EXCLUDE + tuple(exclude)
