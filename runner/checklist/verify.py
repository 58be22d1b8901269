"""``verify``: the team's pre-deployment checklist, run by a machine against a scratch database.

Checks, each of which can be turned off by name:

``heads``
    the scripts have one head (else: the merge command to run).
``steps``
    from base, one revision at a time: upgrade, downgrade, upgrade again; the schema after
    the downgrade must equal the schema before the upgrade, and the second upgrade must give
    the schema of the first (compared as :mod:`runner.checklist.schema_snapshot` snapshots, every difference
    named).
``data``
    before each revision, a few generated rows go into every table (:mod:`runner.checklist.seed_rows`),
    so a revision that only works on empty tables fails here, named.
``models``
    at head, Alembic's autogenerate finds no difference between env.py's ``target_metadata``
    and the migrated schema (skipped, with a note, when env.py has none).
``lint``
    :func:`runner.checklist.lint.run_lint` over every revision (or those after ``since``).

:func:`run_verify` returns a :class:`VerifyResult`; it prints nothing and picks no exit code.
The database must be empty: verify creates and drops whatever the revisions do.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from runner.checklist import schema_snapshot as catalog
from runner.checklist import seed_rows
from runner.checklist.models_diff import compare_models
from runner.checklist.scratch import connections
from runner.errors import ConfigError, first_line
from runner.scripts.env_run import run_env
from runner.scripts.load import Loaded, set_url

CHECKS = ("heads", "steps", "data", "models", "lint")
#: rows put into every table before each revision
SEED_ROWS = 3
BOOKKEEPING = ("alembic_version", "migration_runner_ledger")
MERGE_HINT = 'migration-runner merge -m "merge heads"'


@dataclasses.dataclass(frozen=True)
class CheckFailure:
    check: str  # one of CHECKS, or ``upgrade`` (a revision that does not apply at all)
    message: str
    revision: str | None = None
    path: str | None = None


@dataclasses.dataclass
class CheckResult:
    name: str
    status: str = "passed"  # passed, failed, skipped (turned off, or could not run)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class VerifyResult:
    checks: dict[str, CheckResult]
    failures: list[CheckFailure]
    revisions_walked: int = 0
    elapsed_s: float = 0.0
    lint: Any = None  # runner.checklist.lint.LintResult when the lint check ran

    @property
    def ok(self) -> bool:
        return not self.failures

    def document(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 3),
            "revisions_walked": self.revisions_walked,
            "checks": {name: dataclasses.asdict(c) for name, c in self.checks.items()},
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "lint": self.lint.document() if self.lint is not None else None,
        }


def parse_skip(names: list[str]) -> frozenset[str]:
    """The checks named to turn off. Raises :class:`ConfigError` for an unknown name."""
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ConfigError(
            f"verify --skip: unknown check(s) {', '.join(unknown)} (known: {', '.join(CHECKS)})"
        )
    return frozenset(names)


def run_verify(
    loaded: Loaded,
    url: str,
    *,
    skip: frozenset[str] = frozenset(),
    since: str | None = None,
    lint: Any = None,
    bookkeeping: tuple[str, ...] = BOOKKEEPING,
) -> VerifyResult:
    """Run the checks not in ``skip`` against the empty database at ``url`` (a SQLAlchemy
    URL with the password). ``lint``: a callable ``(loaded, since) -> LintResult`` (the
    lint check; :func:`runner.checklist.lint.run_lint` with the run's thresholds). ``bookkeeping``:
    tables that are not the schema (the version table, the ledger), as
    :func:`runner.checklist.schema_snapshot.qualified` names them. Raises :class:`ConfigError` if the
    database is not empty."""
    started = time.monotonic()
    result = VerifyResult(
        {name: CheckResult(name, "skipped" if name in skip else "passed") for name in CHECKS}, []
    )
    for name in skip:
        result.checks[name].notes.append("turned off")

    def fail(failure: CheckFailure) -> None:
        result.failures.append(failure)
        if failure.check in result.checks:
            result.checks[failure.check].status = "failed"

    scripts = loaded.scripts
    several = len(scripts.heads) > 1
    if several and "heads" not in skip:
        files = ", ".join(f"{h} ({Path(scripts.revisions[h].path).name})" for h in scripts.heads)
        fail(
            CheckFailure(
                "heads", f"{len(scripts.heads)} heads: {files}; merge them with `{MERGE_HINT}`"
            )
        )
    with connections(url) as (conn, sa_conn):

        def schema() -> catalog.Catalog:
            return catalog.snapshot(conn, bookkeeping)

        before = schema()
        if not catalog.is_empty(before):
            raise ConfigError(
                "verify needs an empty scratch database: this one already has "
                f"{len(before.tables)} table(s) and other objects (give "
                "--database-url a new database, or let verify start its own)"
            )
        loaded.config.attributes["connection"] = sa_conn
        set_url(loaded.config, url)
        walk = {"steps", "data", "models"} - skip
        if several and walk:
            for name in sorted(walk):
                result.checks[name].status = "skipped"
                result.checks[name].notes.append("several heads: merge them first")
        elif walk:
            reached = _walk(loaded, conn, sa_conn, schema, skip, fail, result)
            if "models" not in skip:
                if reached:
                    _models(loaded, sa_conn, fail, result.checks["models"])
                else:
                    result.checks["models"].status = "skipped"
                    result.checks["models"].notes.append("the walk did not reach head")
    if "lint" not in skip and lint is None:
        result.checks["lint"].status = "skipped"
        result.checks["lint"].notes.append("no linter given")
    elif "lint" not in skip:
        result.lint = lint(loaded, since)
        for finding in result.lint.errors():
            fail(CheckFailure("lint", finding.summary(), finding.revision, finding.path))
    result.elapsed_s = time.monotonic() - started
    return result


def _step(loaded: Loaded, sa_conn: Any, kind: str, target: str) -> str | None:
    """One env.py run; the error's first line, or None when it worked."""
    try:
        run_env(loaded, kind, target)
        if sa_conn.in_transaction():
            sa_conn.commit()
    except Exception as exc:  # whatever a revision raises is the finding
        if sa_conn.in_transaction():
            sa_conn.rollback()
        cause = getattr(exc, "orig", None) or exc  # the driver's error inside SQLAlchemy's
        return f"{type(cause).__name__}: {first_line(cause)}"
    return None


def _walk(
    loaded: Loaded,
    conn: Any,
    sa_conn: Any,
    schema: Any,
    skip: frozenset[str],
    fail: Any,
    result: VerifyResult,
) -> bool:
    """Upgrade from base one revision at a time (with rows, and down/up, as checked).
    True when head was reached."""
    numbered = 0
    for revision, rev in loaded.scripts.revisions.items():
        name = f"{revision} ({Path(rev.path).name})"
        before = schema()
        seeded: seed_rows.Seeded | None = None
        if "data" not in skip and before.tables:
            seeded = seed_rows.insert_rows(conn, seed_rows.plan_rows(before, SEED_ROWS, numbered))
            numbered += SEED_ROWS
            for table, why in seeded.failed:
                result.checks["data"].notes.append(
                    f"before {revision}: could not fill {table}: {why}"
                )
        error = _step(loaded, sa_conn, "upgrade", revision)
        if error is not None:
            if seeded is not None and seeded.filled:
                fail(
                    CheckFailure(
                        "data",
                        f"{name} fails on tables with rows in them (filled "
                        f"{', '.join(seeded.filled)} with {SEED_ROWS} rows each): {error}. "
                        "It works only on empty tables: e.g. add the column nullable, "
                        "backfill, then SET NOT NULL",
                        revision,
                        rev.path,
                    )
                )
            else:
                fail(CheckFailure("upgrade", f"{name} does not apply: {error}", revision, rev.path))
            return False
        result.revisions_walked += 1
        if "steps" in skip:
            continue
        if len(rev.down) > 1:  # Alembic cannot step back from a merge point to both parents
            result.checks["steps"].notes.append(f"merge point {revision}: down/up not checked")
            continue
        after = schema()
        # REV@-1: one step back along this revision's own branch, leaving other branches be
        error = _step(loaded, sa_conn, "downgrade", f"{revision}@-1")
        if error is not None:
            fail(CheckFailure("steps", f"downgrade of {name} fails: {error}", revision, rev.path))
            continue  # rolled back: the database is still at this revision
        for difference in catalog.diff(before, schema()):
            fail(
                CheckFailure(
                    "steps",
                    f"downgrade of {name} does not restore the schema: "
                    f"{difference.describe('before the upgrade', 'after the downgrade')}",
                    revision,
                    rev.path,
                )
            )
        error = _step(loaded, sa_conn, "upgrade", revision)
        if error is not None:
            fail(
                CheckFailure(
                    "steps",
                    f"{name} does not apply again after its downgrade: {error}",
                    revision,
                    rev.path,
                )
            )
            return False
        for difference in catalog.diff(after, schema()):
            fail(
                CheckFailure(
                    "steps",
                    f"{name} upgraded again gives another schema: "
                    f"{difference.describe('after the first upgrade', 'after the second')}",
                    revision,
                    rev.path,
                )
            )
    return True


def _models(loaded: Loaded, sa_conn: Any, fail: Any, check: CheckResult) -> None:
    """Autogenerate at head against env.py's ``target_metadata``: every difference fails."""
    try:
        found = compare_models(loaded)
    finally:
        if sa_conn.in_transaction():
            sa_conn.rollback()
    if found is None:
        check.status = "skipped"
        check.notes.append("env.py sets no target_metadata: nothing to compare the migrations with")
    for difference in found or ():
        fail(
            CheckFailure(
                "models",
                f"models and migrations differ: {difference} "
                "(add a revision: migration-runner revision --autogenerate -m ...)",
            )
        )
