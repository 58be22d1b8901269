"""``verify``: the team's pre-deployment checklist, run by a machine against a scratch database.

Checks, each of which can be turned off by name:

``heads``
    the scripts have one head (else: the merge command to run).
``steps``
    from base, one revision at a time: upgrade, downgrade, upgrade again; the schema after
    the downgrade must equal the schema before the upgrade, and the second upgrade must give
    the schema of the first (compared as :mod:`runner.checklist.schema_snapshot` snapshots,
    every difference named). A ``downgrade()`` that raises ``NotImplementedError`` is
    irreversible by design: a floor, noted, its own down/up not checked. Several heads are
    walked branch by branch (:func:`walk_order`).
``data``
    before each revision, a few generated rows go into every table (:mod:`runner.checklist.seed_rows`),
    so a revision that only works on empty tables fails here, named.
``models``
    at head, Alembic's autogenerate finds no difference between env.py's ``target_metadata``
    and the migrated schema (skipped, with a note, when env.py has none); and no module of
    the models' package is left unimported by env.py (:mod:`runner.checklist.model_modules`).
``lint``
    :func:`runner.checklist.lint.run_lint` over every revision (or those after ``since``).

A walk that stops (a revision, or env.py, that does not apply) leaves the checks it did not
finish ``incomplete``, never ``passed``. :func:`run_verify` returns a :class:`VerifyResult`;
it prints nothing and picks no exit code. The database must be empty: verify creates and
drops whatever the revisions do.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.checklist import schema_snapshot as catalog
from runner.checklist import seed_rows
from runner.checklist.model_modules import unimported_model_modules
from runner.checklist.models_diff import compare_models
from runner.checklist.scratch import connections
from runner.config.database_url import ConnectionSpec
from runner.errors import ConfigError, Interrupted, first_line
from runner.scripts.env_run import run_env
from runner.scripts.load import Loaded, Scripts, set_url

CHECKS = ("heads", "steps", "data", "models", "lint")
#: rows put into every table before each revision
SEED_ROWS = 3
BOOKKEEPING = ("alembic_version", "migration_runner_ledger")
MERGE_HINT = 'migration-runner merge -m "merge heads"'
#: the statuses of a check; only ``passed`` and ``skipped`` (turned off, or nothing to
#: check) leave a run ok, and ``incomplete`` always comes with the failure that stopped it
STATUSES = ("passed", "failed", "skipped", "incomplete")


@dataclasses.dataclass(frozen=True)
class CheckFailure:
    check: str  # one of CHECKS, or ``upgrade`` (a revision, or env.py, that does not apply)
    message: str
    revision: str | None = None
    path: str | None = None


@dataclasses.dataclass
class CheckResult:
    name: str
    status: str = "passed"  # one of STATUSES
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class VerifyResult:
    checks: dict[str, CheckResult]
    failures: list[CheckFailure]
    revisions_walked: int = 0
    elapsed_s: float = 0.0
    lint: Any = None  # runner.checklist.lint.LintResult when the lint check ran
    #: revisions whose downgrade() raises NotImplementedError (floors), in walk order
    irreversible: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def document(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 3),
            "revisions_walked": self.revisions_walked,
            "irreversible": list(self.irreversible),
            "checks": {name: dataclasses.asdict(c) for name, c in self.checks.items()},
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "lint": self.lint.document() if self.lint is not None else None,
        }

    def fail(self, failure: CheckFailure) -> None:
        self.failures.append(failure)
        if failure.check in self.checks:
            self.checks[failure.check].status = "failed"


def parse_skip(names: list[str]) -> frozenset[str]:
    """The checks named to turn off. Raises :class:`ConfigError` for an unknown name."""
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ConfigError(
            f"verify --skip: unknown check(s) {', '.join(unknown)} (known: {', '.join(CHECKS)})"
        )
    return frozenset(names)


def walk_order(scripts: Scripts) -> list[str]:
    """Every revision, base first, branch by branch: all of the first head's ancestry, then
    what the second head adds, and so on; a revision always after its parents. Pure."""
    graph = scripts.graph()
    order: list[str] = []
    for head in scripts.heads:
        lineage, stack = set(), [head]
        while stack:
            rev = stack.pop()
            if rev not in lineage and rev in graph:
                lineage.add(rev)
                stack.extend(graph[rev])
        order += [rev for rev in scripts.revisions if rev in lineage and rev not in order]
    return order


def run_verify(
    loaded: Loaded,
    spec: ConnectionSpec | None,
    *,
    skip: frozenset[str] = frozenset(),
    since: str | None = None,
    lint: Any = None,
    bookkeeping: tuple[str, ...] = BOOKKEEPING,
) -> VerifyResult:
    """Run the checks not in ``skip`` against the empty database ``spec`` names (None when
    only ``heads`` and ``lint`` run: they need no database). ``lint``:
    a callable ``(loaded, since) -> LintResult`` (the lint check;
    :func:`runner.checklist.lint.run_lint` with the run's thresholds). ``bookkeeping``:
    tables that are not the schema (the version table, the ledger), as
    :func:`runner.checklist.schema_snapshot.qualified` names them. Raises
    :class:`ConfigError` if the database is not empty or cannot be reached."""
    started = time.monotonic()
    result = VerifyResult(
        {name: CheckResult(name, "skipped" if name in skip else "passed") for name in CHECKS}, []
    )
    for name in skip:
        result.checks[name].notes.append("turned off")
    scripts = loaded.scripts
    if len(scripts.heads) > 1 and "heads" not in skip:
        files = ", ".join(f"{h} ({Path(scripts.revisions[h].path).name})" for h in scripts.heads)
        result.fail(
            CheckFailure(
                "heads", f"{len(scripts.heads)} heads: {files}; merge them with `{MERGE_HINT}`"
            )
        )
    if {"steps", "data", "models"} - skip:
        if spec is None:
            raise ConfigError("verify's steps, data and models checks need a scratch database")
        with connections(spec) as (conn, sa_conn):
            walk = _Walk(loaded, conn, sa_conn, skip, result, bookkeeping)
            walk.require_empty()
            loaded.config.attributes["connection"] = sa_conn
            set_url(loaded.config, spec.url(hide_password=False))
            stopped = walk.run()
            if "models" not in skip:
                _models(loaded, sa_conn, result, stopped)
    if "lint" not in skip and lint is None:
        result.checks["lint"].status = "skipped"
        result.checks["lint"].notes.append("no linter given")
    elif "lint" not in skip:
        result.lint = lint(loaded, since)
        for finding in result.lint.errors():
            result.fail(CheckFailure("lint", finding.summary(), finding.revision, finding.path))
    result.elapsed_s = time.monotonic() - started
    return result


@dataclasses.dataclass(frozen=True)
class StepError:
    """What one env.py run raised."""

    message: str  # ``Type: first line`` of the driver's error, or of the exception
    #: ``downgrade()`` raised NotImplementedError: irreversible by design
    irreversible: bool = False
    #: raised by env.py itself, not by a revision
    in_env_py: bool = False
    #: the database refused the rows (SQLSTATE class 22, data exception, or 23, integrity
    #: constraint violation): what only rows in the tables can cause
    about_rows: bool = False


#: SQLSTATE classes an error of the rows belongs to (data exception, integrity violation)
ROW_ERROR_CLASSES = ("22", "23")


def step_error(exc: BaseException, env_py: str, revision_files: set[str]) -> StepError:
    """Describe what a step raised: whose fault (a revision file's frames on the traceback
    make it the revision's; else env.py's own frames, or env.py not compiling, make it
    env.py's), and whether it is a deliberate NotImplementedError."""
    cause = getattr(exc, "orig", None) or exc  # the driver's error inside SQLAlchemy's
    frames = [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    if isinstance(exc, SyntaxError) and exc.filename:  # the file that does not compile
        frames.append(exc.filename)
    files = {str(Path(name).resolve()) for name in frames}
    sqlstate = str(getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or "")
    hint = (
        " (a revision must raise an exception to fail, never sys.exit())"
        if isinstance(exc, SystemExit)
        else ""
    )
    return StepError(
        f"{type(cause).__name__}: {first_line(cause)}{hint}",
        irreversible=isinstance(exc, NotImplementedError),
        in_env_py=not (files & revision_files) and str(Path(env_py).resolve()) in files,
        about_rows=sqlstate[:2] in ROW_ERROR_CLASSES,
    )


def interrupted_by(exc: BaseException) -> Interrupted | None:
    """The :class:`Interrupted` (a stop signal) behind ``exc``, if any: a signal that lands
    during a statement raises inside the driver, and the rollback that follows (on a
    connection still busy with that statement) raises a driver error of its own, whose
    ``__context__`` is the signal. Pure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclasses.dataclass
class _Walk:
    """Upgrade from base one revision at a time (with rows, and down/up, as checked)."""

    loaded: Loaded
    conn: Any
    sa_conn: Any
    skip: frozenset[str]
    result: VerifyResult
    bookkeeping: tuple[str, ...]
    numbered: int = 0

    def schema(self) -> catalog.Catalog:
        return catalog.snapshot(self.conn, self.bookkeeping)

    def require_empty(self) -> None:
        before = self.schema()
        if not catalog.is_empty(before):
            raise ConfigError(
                "verify needs an empty scratch database: this one already has "
                f"{len(before.tables)} table(s) and other objects (give "
                "--database-url a new database, or let verify start its own)"
            )
        self.require_create()

    def require_create(self) -> None:
        """The scratch database's role may create in the schema revisions create in (else
        every revision fails with a permission error that is the environment's, not the
        project's). Raises :class:`ConfigError` naming the grant."""
        user, schema, allowed = self.conn.execute(
            "SELECT current_user, current_schema(), "
            "coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)"
        ).fetchone()
        if not allowed:
            where = f"schema {schema}" if schema else "any schema on its search_path"
            raise ConfigError(
                f"verify's scratch database does not let role {user} create tables in {where} "
                f"(GRANT CREATE ON SCHEMA {schema or 'public'} TO {user}, or give "
                "--database-url a database the role owns, or let verify start its own)"
            )

    @property
    def env_py(self) -> str:
        return str(Path(self.loaded.directory.dir) / "env.py")

    def step(self, kind: str, target: str) -> StepError | None:
        """One env.py run; what it raised, or None when it worked."""
        try:
            run_env(self.loaded, kind, target)
            if self.sa_conn.in_transaction():
                self.sa_conn.commit()
        except (Exception, SystemExit) as exc:  # whatever a revision raises is the finding
            stopped = interrupted_by(exc)
            if stopped is not None:  # a signal, not the revision: the run ends (130)
                raise stopped from None
            if self.sa_conn.in_transaction():
                self.sa_conn.rollback()
            revisions = {
                str(Path(r.path).resolve()) for r in self.loaded.scripts.revisions.values()
            }
            return step_error(exc, self.env_py, revisions)
        return None

    def run(self) -> str | None:
        """Walk every revision in :func:`walk_order`: None when every head was reached and
        the database is there, else the revision the walk stopped at. A stop before the
        last revision leaves the walking checks that have not failed ``incomplete``."""
        scripts = self.loaded.scripts
        order = walk_order(scripts)
        if len(scripts.heads) > 1 and "steps" not in self.skip:
            self.result.checks["steps"].notes.append(
                f"{len(scripts.heads)} heads: walked branch by branch"
            )
        for revision in order:
            if self.one(revision):
                continue
            walked = self.result.revisions_walked
            if walked < len(order):
                for name in ("steps", "data"):
                    check = self.result.checks[name]
                    if check.status == "passed":
                        check.status = "incomplete"
                        check.notes.append(
                            f"the walk stopped at {revision}: {walked} of {len(order)} "
                            "revision(s) walked"
                        )
            return revision
        return None

    def name(self, revision: str) -> str:
        return f"{revision} ({Path(self.loaded.scripts.revisions[revision].path).name})"

    def one(self, revision: str) -> bool:
        """Seed, upgrade, then step down and up again. False when the walk must stop."""
        before = self.schema()
        seeded: seed_rows.Seeded | None = None
        if "data" not in self.skip and before.tables:
            seeded = seed_rows.insert_rows(
                self.conn, seed_rows.plan_rows(before, SEED_ROWS, self.numbered)
            )
            self.numbered += SEED_ROWS
            for table, why in seeded.failed:
                self.result.checks["data"].notes.append(
                    f"before {revision}: could not fill {table}: {why}"
                )
        error = self.step("upgrade", revision)
        if error is not None:
            self.result.fail(self.does_not_apply(revision, error, seeded))
            return False
        self.result.revisions_walked += 1
        if "steps" in self.skip:
            return True
        if len(self.loaded.scripts.revisions[revision].down) > 1:
            # Alembic cannot step back from a merge point to both parents
            self.result.checks["steps"].notes.append(f"merge point {revision}: down/up not checked")
            return True
        return self.down_and_up(revision, before)

    def does_not_apply(
        self, revision: str, error: StepError, seeded: seed_rows.Seeded | None
    ) -> CheckFailure:
        rev = self.loaded.scripts.revisions[revision]
        if error.in_env_py:
            return CheckFailure(
                "upgrade",
                f"env.py fails, so {self.name(revision)} cannot be applied and nothing from "
                f"it on is checked: {error.message}",
                revision,
                self.env_py,
            )
        if seeded is not None and seeded.filled and error.about_rows:
            return CheckFailure(
                "data",
                f"{self.name(revision)} fails on tables with rows in them (filled "
                f"{', '.join(seeded.filled)} with {SEED_ROWS} rows each): {error.message}. "
                "It works only on empty tables: e.g. add the column nullable, "
                "backfill, then SET NOT NULL",
                revision,
                rev.path,
            )
        return CheckFailure(
            "upgrade", f"{self.name(revision)} does not apply: {error.message}", revision, rev.path
        )

    def down_and_up(self, revision: str, before: catalog.Catalog) -> bool:
        """Downgrade one step along the revision's own branch (``REV@-1``, other branches
        left be), compare, upgrade again, compare. False when the upgrade fails again."""
        name, path = self.name(revision), self.loaded.scripts.revisions[revision].path
        fail: Callable[[str], None] = lambda message: self.result.fail(  # noqa: E731
            CheckFailure("steps", message, revision, path)
        )
        after = self.schema()
        error = self.step("downgrade", f"{revision}@-1")
        if error is not None and error.irreversible:
            self.result.irreversible.append(revision)
            self.result.checks["steps"].notes.append(
                f"{name}: downgrade() raises NotImplementedError: irreversible, a floor "
                "(its down/up not checked; the revisions after it still are)"
            )
            return True  # rolled back: the database is still at this revision
        if error is not None:
            fail(f"downgrade of {name} fails: {error.message}")
            return True
        for difference in catalog.diff(before, self.schema()):
            fail(
                f"downgrade of {name} does not restore the schema: "
                f"{difference.describe('before the upgrade', 'after the downgrade')}"
            )
        error = self.step("upgrade", revision)
        if error is not None:
            fail(f"{name} does not apply again after its downgrade: {error.message}")
            return False
        for difference in catalog.diff(after, self.schema()):
            fail(
                f"{name} upgraded again gives another schema: "
                f"{difference.describe('after the first upgrade', 'after the second')}"
            )
        return True


def _models(loaded: Loaded, sa_conn: Any, result: VerifyResult, stopped: str | None) -> None:
    """Autogenerate at head against env.py's ``target_metadata``: every difference fails;
    then every model module env.py never imports fails too. ``stopped``: the revision the
    walk stopped at (the database is not at head: nothing to compare)."""
    check = result.checks["models"]
    if stopped is not None:
        check.status = "incomplete"
        check.notes.append(f"the walk stopped at {stopped}: the database is not at head")
        return
    try:
        found = compare_models(loaded)
    finally:
        if sa_conn.in_transaction():
            sa_conn.rollback()
    if found is None:
        check.status = "skipped"
        check.notes.append("env.py sets no target_metadata: nothing to compare the migrations with")
        return
    for difference in found.differences:
        result.fail(
            CheckFailure(
                "models",
                f"models and migrations differ: {difference} "
                "(add a revision: migration-runner revision --autogenerate -m ...)",
            )
        )
    for module in unimported_model_modules(found.metadata):
        if module.error is not None:
            check.notes.append(f"model module {module.module} fails to import: {module.error}")
            continue
        result.fail(
            CheckFailure(
                "models",
                f"model module {module.module} is never imported by env.py: its table(s) "
                f"{', '.join(module.tables)} are invisible to autogenerate and to this check "
                "(import it where target_metadata is built)",
                path=module.path,
            )
        )
