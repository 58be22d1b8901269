"""``lint``: the SQL each revision would run, checked before it runs.

For every revision (rendered offline, :mod:`runner.checklist.lint.sql`): squawk's rules
(:mod:`runner.checklist.lint.squawk`) and the team guide's backwards-compatibility rules
(:mod:`runner.checklist.lint.rules`). Each finding names the revision file and line. A revision can
acknowledge a finding (:mod:`runner.checklist.lint.acks`): reported, not an error. Given the live
database's table sizes (:mod:`runner.checklist.lint.sizes`), findings whose cost grows with the table
are graded by it: information on a tiny table, an error on a big one.

:func:`run_lint` returns a :class:`LintResult`; it prints nothing and picks no exit code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runner.checklist.lint.acks import read_acks
from runner.checklist.lint.phases import by_phase
from runner.checklist.lint.rules import RULES, History, check_revision, created_table, table_of
from runner.checklist.lint.sizes import SIZE_GRADED, TableSize, Thresholds, grade, table_sizes
from runner.checklist.lint.sql import Statement, revision_sql
from runner.checklist.lint.squawk import DEFAULT_EXCLUDE, run_squawk
from runner.scripts.load import Loaded

__all__ = ["Finding", "LintResult", "RULES", "Thresholds", "run_lint", "table_sizes"]

LEVELS = ("error", "warning", "info")
#: squawk's rules that say what one of ours says about the same statement, which then
#: reports it once (ours: an error, with the guide's sequence as the fix)
SAME_AS_OURS = {
    "ban-drop-column": "drop-column",
    "ban-drop-table": "drop-table",
    "renaming-column": "rename-column",
    "renaming-table": "rename-table",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    revision: str
    path: str
    line: int | None
    rule: str
    source: str  # "runner" (our rules) or "squawk"
    level: str  # error, warning, info
    message: str  # why
    fix: str  # how
    table: str | None = None
    size: str | None = None  # the table's size, when graded against a live database
    acknowledged: str | None = None  # the revision's reason, when it acknowledged the finding

    @property
    def blocking(self) -> bool:
        return self.level == "error" and self.acknowledged is None

    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def summary(self) -> str:
        return f"{self.revision} {self.location()}: {self.rule}: {self.message}"


@dataclasses.dataclass
class LintResult:
    findings: list[Finding]
    revisions: list[str]  # the revisions linted, oldest first
    notes: list[str] = dataclasses.field(default_factory=list)
    sized: bool = False  # graded against a live database's table sizes

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def ok(self) -> bool:
        return not self.errors()

    def document(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "revisions": self.revisions,
            "sized": self.sized,
            "errors": len(self.errors()),
            "notes": self.notes,
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }


def run_lint(
    loaded: Loaded,
    *,
    revisions: Iterable[str] | None = None,
    since: str | None = None,
    sizes: Mapping[str, TableSize] | None = None,
    thresholds: Thresholds = Thresholds(),
    squawk: bool = True,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
) -> LintResult:
    """Lint ``revisions`` (default: all; ``since``: those after that revision). Every
    revision from base is rendered, so that rules see what earlier ones did. ``sizes``: the
    live tables (:func:`table_sizes`), to grade size-sensitive findings; tables created by
    an earlier linted revision count as empty. ``exclude``: rule names turned off (ours or
    squawk's). Raises :class:`ConfigError` when the SQL cannot be rendered or squawk fails."""
    known = loaded.scripts.revisions
    chosen = _choose(loaded, revisions, since)
    history = History()
    rendered: dict[str, list[Statement]] = {}
    runner_hits = {}
    notes = []
    for rev in known.values():
        if len(rev.down) > 1:
            if rev.id in chosen:
                notes.append(f"merge point {rev.id}: not linted")
            continue
        statements = revision_sql(loaded, rev)
        hits = check_revision(statements, history)
        if rev.id in chosen:
            rendered[rev.id] = [
                s for s in statements if s.line is not None or s.sql.upper() in ("BEGIN", "COMMIT")
            ]
            runner_hits[rev.id] = hits
    new_tables: set[str] = set()
    findings = []
    squawk_hits = run_squawk(rendered, exclude) if squawk else []
    for rev_id, statements in rendered.items():
        rev = known[rev_id]
        acks = read_acks(Path(rev.path).read_text())
        notes += [
            f"{rev.path}:{line}: acknowledgement without a reason (add `-- <reason>`): ignored"
            for line in acks.invalid
        ]
        created_at = {created_table(" ".join(s.sql.split())): i for i, s in enumerate(statements)}
        raw = [
            Finding(
                rev_id,
                rev.path,
                hit.line,
                hit.rule,
                "runner",
                "error",
                hit.message,
                hit.fix,
                hit.table,
            )
            for hit in runner_hits[rev_id]
            if hit.rule not in exclude
        ]
        for hit in (h for h in squawk_hits if h.revision == rev_id):
            statement = statements[hit.statement]
            table = table_of(" ".join(statement.sql.split()))
            if table is not None and created_at.get(table, hit.statement) < hit.statement:
                continue  # a table this revision created: nobody uses it yet
            if any(f.rule == SAME_AS_OURS.get(hit.rule) and f.line == statement.line for f in raw):
                continue
            raw.append(
                Finding(
                    rev_id,
                    rev.path,
                    statement.line,
                    hit.rule,
                    "squawk",
                    hit.level,
                    hit.message,
                    hit.help,
                    table,
                )
            )
        for finding in (by_phase(f, rev.phase) for f in raw):
            if sizes is not None and finding.rule in SIZE_GRADED and finding.table:
                size = TableSize(0, 0) if finding.table in new_tables else sizes.get(finding.table)
                if size is not None:
                    finding = dataclasses.replace(
                        finding, level=grade(size, thresholds), size=size.describe()
                    )
            reason = acks.reasons.get(finding.rule)
            findings.append(
                dataclasses.replace(finding, acknowledged=reason) if reason else finding
            )
        new_tables |= {t for t in created_at if t}
    findings.sort(key=lambda f: (list(rendered).index(f.revision), f.line or 0, f.rule))
    return LintResult(findings, list(rendered), notes, sizes is not None)


def _choose(loaded: Loaded, revisions: Iterable[str] | None, since: str | None) -> set[str]:
    from runner.errors import ConfigError
    from runner.plan import applied

    if revisions is not None:
        return set(revisions)
    if since is None:
        return set(loaded.scripts.revisions)
    if since not in loaded.scripts.revisions:
        raise ConfigError(f"--since {since!r} is not a known revision id")
    return set(loaded.scripts.revisions) - applied(loaded.scripts.graph(), (since,))
