"""The failure alarm sees every failed run: the summary's EMF carries the service's
dimension set (what the Pulumi program's alarm watches, ``{Service, Environment}``) on every
way out, also those where the settings could not be read or the command line was wrong.
Before, a run ending in a bad setting published ``Failures`` under ``[Command]`` only, and a
bad command line published no metric at all: the alarm never fired for either."""

from __future__ import annotations

import json

import pytest

from runner.errors import ExitCode
from tests.support.helpers import run, runner_env

DIMENSIONS = {"MIGRATION_METRICS_SERVICE": "orders", "MIGRATION_METRICS_ENVIRONMENT": "prod"}


def _summary(result) -> dict:
    lines = [
        json.loads(line)
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith("{")
    ]
    summaries = [event for event in lines if event.get("event") == "summary"]
    assert len(summaries) == 1, result.stdout + result.stderr
    return summaries[0]


WAYS_OUT = {
    "invalid setting": ({"MIGRATION_LOCK_WAIT_TIMEOUT": "soon"}, ("upgrade",)),
    "no database settings": ({}, ("upgrade",)),
    "bad command line": ({}, ("upgrade", "--bogus")),
    "unknown verb": ({}, ("upgrdae",)),
}


@pytest.mark.parametrize("way", list(WAYS_OUT))
def test_a_failed_run_publishes_the_failure_the_alarm_watches(way):
    settings, argv = WAYS_OUT[way]
    result = run(runner_env(None, **DIMENSIONS, **settings), *argv)
    assert result.code == ExitCode.CONFIG
    summary = _summary(result)
    assert summary["exit_code"] == ExitCode.CONFIG
    [directive] = summary["_aws"]["CloudWatchMetrics"]
    assert ["Service", "Environment"] in directive["Dimensions"]
    assert (summary["Service"], summary["Environment"]) == ("orders", "prod")
    assert directive["Namespace"] == "MigrationRunner"
    assert summary["Failures"] == 1 and summary["Successes"] == 0


def test_an_invalid_metrics_setting_still_publishes_under_the_others():
    """The metrics' own settings are read one by one: a bad namespace falls back to the
    default rather than losing the service's dimensions."""
    result = run(runner_env(None, **DIMENSIONS, MIGRATION_METRICS_NAMESPACE="x" * 300), "upgrade")
    summary = _summary(result)
    assert result.code == ExitCode.CONFIG
    assert summary["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "MigrationRunner"
    assert (summary["Service"], summary["Environment"]) == ("orders", "prod")
