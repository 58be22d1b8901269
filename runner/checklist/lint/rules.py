"""The team guide's backwards-compatibility rules, which squawk does not have, as pure functions
over rendered statements.

While a migration goes live the previous release of the app keeps running against the new
schema, so a revision must not take away what that release uses:

``drop-table`` / ``drop-column``
    the old release still reads and writes it: stop using it in one release, drop it in a later one.
``rename-table`` / ``rename-column``
    the old release knows only the old name: add the new one, copy, switch the app, drop the old.
``set-not-null-without-backfill``
    ``SET NOT NULL`` on a column no earlier statement backfilled (``UPDATE t SET c = ...``):
    the guide's sequence is add nullable, backfill, then set NOT NULL.
``change-column-type``
    the old release reads and writes the old type (and most changes rewrite the table).
``set-not-null``
    ``SET NOT NULL`` on a backfilled column: the old release may still insert NULLs, so it
    belongs in a contract revision (:mod:`runner.checklist.lint.phases`).

A statement on a table created earlier in the same revision is never a finding: nobody uses
that table yet.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from runner.checklist.lint.sql import Statement

RULES = (
    "drop-table",
    "drop-column",
    "rename-table",
    "rename-column",
    "set-not-null-without-backfill",
    "change-column-type",
    "set-not-null",
)

_NAME = r'(?:"[^"]+"|[\w$]+)'
_QNAME = rf"{_NAME}(?:\.{_NAME})?"
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<t>{_QNAME})", re.I
)
_DROP_TABLE = re.compile(
    rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<t>{_QNAME}(?:\s*,\s*{_QNAME})*)", re.I
)
_ALTER_TABLE = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<t>{_QNAME})\s+(?P<rest>.*)$", re.I | re.S
)
_ON_TABLE = re.compile(rf"\bON\s+(?:ONLY\s+)?(?P<t>{_QNAME})", re.I)
_UPDATE = re.compile(
    rf"^UPDATE\s+(?:ONLY\s+)?(?P<t>{_QNAME})(?:\s+(?:AS\s+)?\w+)?\s+SET\s+(?P<set>.*?)(?:\s+(?:FROM|WHERE|RETURNING)\s|$)",
    re.I | re.S,
)


def unquote(name: str) -> str:
    """``"public"."calls"`` → ``calls`` (public is implied), ``"billing".x`` → ``billing.x``."""
    parts = [p[1:-1] if p.startswith('"') else p.lower() for p in re.findall(_NAME, name)]
    return ".".join(parts[1:] if len(parts) == 2 and parts[0] == "public" else parts)


def table_of(sql: str) -> str | None:
    """The table a statement works on, when it names one (ALTER/CREATE/DROP TABLE, CREATE
    INDEX ... ON, UPDATE). Pure."""
    for pattern in (_ALTER_TABLE, _CREATE_TABLE, _DROP_TABLE, _UPDATE):
        found = pattern.match(sql)
        if found:
            return unquote(re.split(r"\s*,\s*", found.group("t"))[0])
    if re.match(r"^(CREATE|DROP)\s+(UNIQUE\s+)?INDEX", sql, re.I):
        found = _ON_TABLE.search(sql)
        return unquote(found.group("t")) if found else None
    return None


def created_table(sql: str) -> str | None:
    found = _CREATE_TABLE.match(sql)
    return unquote(found.group("t")) if found else None


@dataclasses.dataclass(frozen=True)
class Hit:
    rule: str
    line: int | None
    table: str
    message: str  # why
    fix: str  # how


@dataclasses.dataclass
class History:
    """What earlier statements did, that later rules depend on: which columns were backfilled."""

    backfilled: set[tuple[str, str]] = dataclasses.field(default_factory=set)


_FIX_DROP = (
    "stop using it in one release; drop it in a later revision once no running release "
    "reads it (or acknowledge: # migration-runner: allow {rule} -- <why it is safe>)"
)
_FIX_RENAME = (
    "add the new {what}, copy the data, switch the app in a release, drop the old one "
    "later (or acknowledge: # migration-runner: allow {rule} -- <why it is safe>)"
)


def _alter_hits(table: str, rest: str, line: int | None, history: History) -> Iterable[Hit]:
    """The findings of one ``ALTER TABLE table <rest>`` (which may hold several actions)."""
    for action in _actions(rest):
        if m := re.match(rf"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(?P<c>{_NAME})", action, re.I):
            if m.group("c").upper() not in ("CONSTRAINT",):
                column = unquote(m.group("c"))
                yield Hit(
                    "drop-column",
                    line,
                    table,
                    f"drops column {table}.{column}, which the "
                    "release still running may read or write",
                    _FIX_DROP.format(rule="drop-column"),
                )
        elif m := re.match(rf"^RENAME\s+TO\s+(?P<n>{_NAME})", action, re.I):
            yield Hit(
                "rename-table",
                line,
                table,
                f"renames table {table} to {unquote(m.group('n'))}: "
                "the release still running knows only the old name",
                _FIX_RENAME.format(what="table", rule="rename-table"),
            )
        elif m := re.match(
            rf"^RENAME\s+(?:COLUMN\s+)?(?P<c>{_NAME})\s+TO\s+(?P<n>{_NAME})", action, re.I
        ):
            if m.group("c").upper() != "CONSTRAINT":
                yield Hit(
                    "rename-column",
                    line,
                    table,
                    f"renames column {table}.{unquote(m.group('c'))} "
                    f"to {unquote(m.group('n'))}: the release still running knows only the old name",
                    _FIX_RENAME.format(what="column", rule="rename-column"),
                )
        elif m := re.match(
            rf"^ALTER\s+(?:COLUMN\s+)?(?P<c>{_NAME})\s+SET\s+NOT\s+NULL", action, re.I
        ):
            column = unquote(m.group("c"))
            if (table, column) in history.backfilled:
                yield Hit(
                    "set-not-null",
                    line,
                    table,
                    f"sets {table}.{column} NOT NULL: the release still running may insert NULLs",
                    f"run it once no release writes NULL into {column}",
                )
            else:
                yield Hit(
                    "set-not-null-without-backfill",
                    line,
                    table,
                    f"sets {table}.{column} NOT NULL, but no earlier revision backfilled it: "
                    "existing rows with NULL make it fail, and the release still running "
                    "may insert NULLs",
                    "add the column nullable, backfill it (UPDATE ... SET "
                    f"{column} = ...) in an earlier revision, then SET NOT NULL",
                )
        elif m := re.match(
            rf"^ALTER\s+(?:COLUMN\s+)?(?P<c>{_NAME})\s+(?:SET\s+DATA\s+)?TYPE\s+(?P<type>.*)",
            action,
            re.I | re.S,
        ):
            column = unquote(m.group("c"))
            yield Hit(
                "change-column-type",
                line,
                table,
                f"changes the type of {table}.{column} in place ({m.group('type').strip()}): "
                "the release still running reads and writes the old type, and most type "
                "changes rewrite the table under an ACCESS EXCLUSIVE lock",
                "add a column of the new type, backfill it, switch the app, drop the old "
                "column later (or acknowledge: # migration-runner: allow change-column-type "
                "-- <why it is safe>)",
            )


def _actions(rest: str) -> list[str]:
    """The comma-separated actions of an ALTER TABLE, commas inside parentheses kept."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(rest):
        depth += c == "("
        depth -= c == ")"
        if c == "," and depth == 0:
            out.append(rest[start:i])
            start = i + 1
    out.append(rest[start:])
    return [a.strip() for a in out if a.strip()]


def check_revision(statements: list[Statement], history: History) -> list[Hit]:
    """The backwards-compatibility findings of one revision's statements, in order; records
    what they backfill in ``history`` for the revisions after it."""
    created: set[str] = set()
    hits: list[Hit] = []
    for statement in statements:
        sql = " ".join(statement.sql.split())
        if table := created_table(sql):
            created.add(table)
            continue
        if update := _UPDATE.match(sql):
            table = unquote(update.group("t"))
            for column in re.findall(rf"(?:^|,)\s*({_NAME})\s*=", update.group("set")):
                history.backfilled.add((table, unquote(column)))
            continue
        table = table_of(sql)
        if table is None or table in created:
            continue
        if drop := _DROP_TABLE.match(sql):
            for name in re.split(r"\s*,\s*", drop.group("t")):
                if unquote(name) not in created:
                    hits.append(
                        Hit(
                            "drop-table",
                            statement.line,
                            unquote(name),
                            f"drops table {unquote(name)}, which the release still "
                            "running may read or write",
                            _FIX_DROP.format(rule="drop-table"),
                        )
                    )
        elif alter := _ALTER_TABLE.match(sql):
            hits.extend(_alter_hits(table, alter.group("rest"), statement.line, history))
    return hits
