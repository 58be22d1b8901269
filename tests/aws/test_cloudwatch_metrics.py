"""The summary as a CloudWatch Embedded Metric Format document, validated against the
specification's JSON schema (tests/emf_schema.json) and the rules its text adds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runner.observe.cloudwatch_metrics import DEFAULT_NAMESPACE, emf_members
from tests.support.helpers import run, runner_env

SCHEMA = json.loads((Path(__file__).parent / "emf_schema.json").read_text())
MIGRATED = {
    "command": "upgrade",
    "outcome": "migrated",
    "from_revision": None,
    "to_revision": ["b"],
    "applied": ["a", "b"],
    "connect_attempts": 3,
    "lock_wait_ms": 120,
    "exit_code": 0,
    "total_ms": 950,
}
UP_TO_DATE = dict(
    MIGRATED, outcome="up_to_date", applied=[], connect_attempts=1, lock_wait_ms=None, total_ms=40
)
FAILED = dict(MIGRATED, outcome="failed", applied=[], lock_wait_ms=None, exit_code=3)


def emf(summary: dict[str, Any], **config: Any) -> dict[str, Any]:
    """The summary event as logged: its own fields plus the EMF members."""
    config = {
        "namespace": DEFAULT_NAMESPACE,
        "service": "orders",
        "environment": "prod",
        "timestamp_ms": 1_764_540_000_123,
        **config,
    }
    return {"event": "summary", **summary, **emf_members(summary, **config)}


def spec_violations(document: dict[str, Any]) -> list[str]:
    """What the specification's text requires beyond its schema."""
    problems = []
    for directive in document["_aws"]["CloudWatchMetrics"]:
        if len(directive["Metrics"]) > 100:
            problems.append("more than 100 metrics in a directive")
        for name in dict.fromkeys(n for names in directive["Dimensions"] for n in names):
            if not isinstance(document.get(name), str) or len(document[name]) > 1024:
                problems.append(f"dimension {name!r} is not a root member with a string value")
        for metric in directive["Metrics"]:
            value = document.get(metric["Name"])
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"metric {metric['Name']!r} is not a root member with a number")
    return problems


@pytest.mark.parametrize(
    "summary", [MIGRATED, UP_TO_DATE, FAILED], ids=["migrated", "no-op", "failed"]
)
def test_summary_is_a_valid_emf_document(summary: dict[str, Any]) -> None:
    document = json.loads(json.dumps(emf(summary)))  # as the log line carries it
    jsonschema.Draft7Validator(SCHEMA).validate(document)
    assert spec_violations(document) == []


def test_the_schema_and_rules_reject_what_the_specification_forbids() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft7Validator(SCHEMA)
    good = emf(MIGRATED)
    no_timestamp = json.loads(json.dumps(good))
    del no_timestamp["_aws"]["Timestamp"]
    bad_unit = json.loads(json.dumps(good))
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = "Millis"
    assert not validator.is_valid(no_timestamp)
    assert not validator.is_valid(bad_unit)
    assert spec_violations({**good, "DurationMs": "950"}) == [
        "metric 'DurationMs' is not a root member with a number"
    ]
    assert spec_violations({**good, "Service": 7}) == [
        "dimension 'Service' is not a root member with a string value"
    ]


def test_metrics_say_what_the_run_did() -> None:
    document = emf(MIGRATED)
    assert {
        k: document[k]
        for k in (
            "DurationMs",
            "LockWaitMs",
            "ConnectAttempts",
            "RevisionsApplied",
            "Successes",
            "Failures",
        )
    } == {
        "DurationMs": 950,
        "LockWaitMs": 120,
        "ConnectAttempts": 3,
        "RevisionsApplied": 2,
        "Successes": 1,
        "Failures": 0,
    }
    units = {m["Name"]: m["Unit"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {
        "DurationMs": "Milliseconds",
        "LockWaitMs": "Milliseconds",
        "ConnectAttempts": "Count",
        "RevisionsApplied": "Count",
        "Successes": "Count",
        "Failures": "Count",
    }


def test_a_run_that_needed_no_lock_reports_no_lock_wait() -> None:
    document = emf(UP_TO_DATE)
    assert "LockWaitMs" not in document
    assert "LockWaitMs" not in {
        m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }


def test_a_failed_run_counts_one_failure() -> None:
    document = emf(FAILED)
    assert (document["Successes"], document["Failures"]) == (0, 1)


def test_namespace_and_dimensions_come_from_the_configuration() -> None:
    document = emf(MIGRATED, namespace="Orders/Migrations", service="orders", environment="staging")
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Orders/Migrations"
    # per service (what the failure alarm watches) and per command
    assert directive["Dimensions"] == [
        ["Service", "Environment"],
        ["Service", "Environment", "Command"],
    ]
    assert (document["Service"], document["Environment"], document["Command"]) == (
        "orders",
        "staging",
        "upgrade",
    )
    assert document["_aws"]["Timestamp"] == 1_764_540_000_123


def test_unset_service_and_environment_are_not_dimensions() -> None:
    document = emf(MIGRATED, service=None, environment=None)
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Command"]]
    assert "Service" not in document and "Environment" not in document
    jsonschema.Draft7Validator(SCHEMA).validate(document)


def test_a_phase_joins_the_per_command_set_only_and_only_when_one_was_asked_for() -> None:
    document = emf(dict(MIGRATED, phase="expand"))
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["Service", "Environment"],  # the service's alarm counts every phase
        ["Service", "Environment", "Command", "Phase"],
    ]
    assert document["Phase"] == "expand" and not spec_violations(document)
    jsonschema.Draft7Validator(SCHEMA).validate(document)
    assert "Phase" not in emf(dict(MIGRATED, phase=None))


def test_the_summary_fields_are_kept_as_they_were() -> None:
    document = emf(MIGRATED)
    assert {k: document[k] for k in MIGRATED} == MIGRATED


def test_a_real_runs_summary_line_is_a_valid_emf_document(database, project) -> None:
    project.audited_chain(["e1", "e2"])
    result = run(
        runner_env(
            database,
            project,
            MIGRATION_METRICS_SERVICE="orders",
            MIGRATION_METRICS_ENVIRONMENT="prod",
        )
    )
    assert result.code == 0, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if '"event": "summary"' in line]
    document = json.loads(line)  # one log line: what CloudWatch Logs parses
    jsonschema.Draft7Validator(SCHEMA).validate(document)
    assert spec_violations(document) == []
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == DEFAULT_NAMESPACE
    assert (document["Service"], document["Environment"], document["Command"]) == (
        "orders",
        "prod",
        "upgrade",
    )
    assert (document["RevisionsApplied"], document["Successes"], document["Failures"]) == (2, 1, 0)
    assert document["DurationMs"] == document["total_ms"]
    assert document["LockWaitMs"] == document["lock_wait_ms"]


def test_the_verdicts_are_the_codes_the_cli_gives_without_an_error() -> None:
    """VERDICTS spells ExitCode's values out (the module is read on its own by infra's
    tests): each one is a code the CLI maps an outcome to, not an error's."""
    from runner.cli.main import CHECK_EXIT, FAILED_EXIT
    from runner.observe.cloudwatch_metrics import VERDICTS

    answers = {int(code) for code in (*CHECK_EXIT.values(), *FAILED_EXIT.values())} - {0}
    assert set().union(*VERDICTS.values()) == answers


@pytest.mark.parametrize(
    ("exit_code", "runner_summary", "failures"),
    [
        (42, None, 1),  # RunTask started nothing: no runner ever wrote a line
        (43, None, 1),  # the task never ran (image pull, secrets)
        (137, None, 1),  # OOM-killed, or SIGKILLed after stopTimeout: no runner summary
        (6, {"event": "summary", "exit_code": 6}, 0),  # the runner's own line counted it
        (44, {"event": "summary", "exit_code": 130}, 0),
        (0, None, 0),
    ],
)
def test_the_launchers_summary_counts_the_failures_no_runner_line_counted(
    exit_code: int, runner_summary: Any, failures: int
) -> None:
    from runner.observe.cloudwatch_metrics import launcher_metrics, with_metrics

    summary = {"command": "ecs run", "exit_code": exit_code, "runner_summary": runner_summary}
    document = with_metrics(
        summary,
        now_s=1_764_540_000,
        service="orders",
        environment="prod",
        metrics=launcher_metrics(summary),
    )
    jsonschema.Draft7Validator(SCHEMA).validate(document)
    assert spec_violations(document) == []
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert ["Service", "Environment"] in directive["Dimensions"]
    assert [m["Name"] for m in directive["Metrics"]] == ["Failures"]
    assert document["Failures"] == failures
