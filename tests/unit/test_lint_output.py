"""How findings read: on a terminal, and as GitHub annotations on the pull request's diff."""

from __future__ import annotations

import os

from runner.checklist import render
from runner.checklist.lint import Finding, LintResult
from runner.checklist.verify import CheckFailure, CheckResult, VerifyResult


def _finding(**kw) -> Finding:
    base = dict(
        revision="r02",
        path=os.path.join(os.getcwd(), "alembic/versions/r02_x.py"),
        line=14,
        rule="drop-column",
        source="runner",
        level="error",
        message="drops column calls.note, which the release still running may read or write",
        fix="stop using it first",
        table="calls",
    )
    return Finding(**(base | kw))


def test_an_error_becomes_a_github_annotation_on_its_file_and_line():
    result = LintResult([_finding()], ["r02"])
    assert list(render.lint_annotations(result)) == [
        "::error file=alembic/versions/r02_x.py,line=14,title=drop-column (r02)::drops column "
        "calls.note, which the release still running may read or write%0Afix: stop using it first"
    ]


def test_an_acknowledged_finding_is_a_notice_and_info_is_left_out():
    result = LintResult(
        [
            _finding(acknowledged="release 2.3 stopped reading it"),
            _finding(level="info", rule="require-concurrent-index-creation"),
        ],
        ["r02"],
    )
    [line] = render.lint_annotations(result)
    assert line.startswith("::notice file=alembic/versions/r02_x.py,line=14,")
    assert line.endswith("%0Aacknowledged: release 2.3 stopped reading it")


def test_the_terminal_text_says_revision_place_rule_why_and_fix():
    text = render.lint_text(LintResult([_finding()], ["r02"]))
    assert text.splitlines()[:3] == [
        "r02  alembic/versions/r02_x.py:14  error  drop-column (runner)",
        "    drops column calls.note, which the release still running may read or write",
        "    fix: stop using it first",
    ]
    assert text.splitlines()[-1] == "1 revision(s) linted: 1 error(s), 0 warning(s), 0 acknowledged"


def test_verify_failures_read_per_check_and_annotate_the_revision_file():
    result = VerifyResult(
        {
            "steps": CheckResult("steps", "failed"),
            "models": CheckResult("models", "skipped", ["turned off"]),
        },
        [
            CheckFailure(
                "steps",
                "downgrade of r02 leaves index ix",
                "r02",
                os.path.join(os.getcwd(), "v/r02.py"),
            )
        ],
        2,
        1.25,
    )
    assert render.verify_text(result).splitlines() == [
        "FAILED   steps",
        "SKIPPED  models (turned off)",
        "FAIL [steps] v/r02.py: downgrade of r02 leaves index ix",
        "verify failed: 2 revision(s) walked in 1.2 s",
    ]
    assert list(render.verify_annotations(result)) == [
        "::error file=v/r02.py,title=verify%3A steps::downgrade of r02 leaves index ix"
    ]
