"""How ``verify`` and ``lint`` results read: text for a terminal, and GitHub Actions
annotations (``::error file=...,line=...::...``) so that findings show on the pull request's
diff. JSON is each result's ``document()``. Pure: strings in, strings out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

#: GitHub annotation command per level
_ANNOTATION = {"error": "error", "warning": "warning", "info": "notice", "notice": "notice"}


def _relative(path: str | None) -> str | None:
    """Paths as GitHub wants them: relative to the working directory (the checkout)."""
    if not path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def _escape(text: str, *, property_: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_ else text


def annotation(
    level: str,
    message: str,
    path: str | None = None,
    line: int | None = None,
    title: str | None = None,
) -> str:
    """One GitHub Actions workflow command."""
    props = [f"file={_escape(_relative(path) or '', property_=True)}"] if path else []
    props += [f"line={line}"] if path and line else []
    props += [f"title={_escape(title, property_=True)}"] if title else []
    head = f"::{_ANNOTATION.get(level, 'warning')}"
    return (
        f"{head} {','.join(props)}::{_escape(message)}" if props else f"{head}::{_escape(message)}"
    )


def lint_text(result: Any) -> str:
    """A lint result for people: per finding, revision, file:line, level, rule, why, fix."""
    lines = []
    for f in result.findings:
        level = "acknowledged" if f.acknowledged else f.level
        lines.append(
            f"{f.revision}  {_relative(f.path)}{f':{f.line}' if f.line else ''}  "
            f"{level}  {f.rule} ({f.source})"
        )
        lines.append(f"    {f.message}" + (f" [{f.table}: {f.size}]" if f.size else ""))
        if f.acknowledged:
            lines.append(f"    acknowledged: {f.acknowledged}")
        elif f.fix:
            lines.append(f"    fix: {f.fix}")
    lines += [f"note: {note}" for note in result.notes]
    errors = len(result.errors())
    graded = " (graded by the live tables' sizes)" if result.sized else ""
    lines.append(
        f"{len(result.revisions)} revision(s) linted{graded}: {errors} error(s), "
        f"{sum(f.level == 'warning' for f in result.findings)} warning(s), "
        f"{sum(bool(f.acknowledged) for f in result.findings)} acknowledged"
    )
    return "\n".join(lines)


def lint_annotations(result: Any) -> Iterable[str]:
    for f in result.findings:
        if f.level == "info" and not f.acknowledged:
            continue
        why = f"{f.message}" + (f" ({f.table}: {f.size})" if f.size else "")
        why += (
            f"\nacknowledged: {f.acknowledged}"
            if f.acknowledged
            else (f"\nfix: {f.fix}" if f.fix else "")
        )
        yield annotation(
            "notice" if f.acknowledged else f.level, why, f.path, f.line, f"{f.rule} ({f.revision})"
        )


def verify_text(result: Any) -> str:
    """A verify result for people: each check's status and notes, then each failure."""
    lines = []
    for check in result.checks.values():
        notes = f" ({'; '.join(check.notes)})" if check.notes else ""
        lines.append(f"{check.status.upper():8} {check.name}{notes}")
    lines += [failure_line(failure) for failure in result.failures]
    if result.lint is not None and result.lint.findings:
        lines += ["", lint_text(result.lint)]
    lines.append(
        f"verify {'passed' if result.ok else 'failed'}: {result.revisions_walked} "
        f"revision(s) walked in {result.elapsed_s:.1f} s"
    )
    return "\n".join(lines)


def failure_line(failure: Any) -> str:
    """One verify failure: ``FAIL [check] path: message``."""
    where = f" {_relative(failure.path)}" if failure.path else ""
    return f"FAIL [{failure.check}]{where}: {failure.message}"


def verify_annotations(result: Any) -> Iterable[str]:
    for failure in result.failures:
        if failure.check != "lint":
            yield annotation(
                "error", failure.message, failure.path, None, f"verify: {failure.check}"
            )
    if result.lint is not None:
        yield from lint_annotations(result.lint)
