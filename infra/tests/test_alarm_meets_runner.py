"""The alarm against the runner's own metrics: the failure alarm the program declares must
watch a metric that CloudWatch extracts from the runner's `summary` line (Embedded Metric
Format), built by the runner's code with the settings the program gives the container.

CloudWatch makes one metric per (namespace, metric name, dimension set); an alarm on any other
combination watches a metric nobody writes, and with missing data treated as OK never fires.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import INFRA, run_program

REPOSITORY = INFRA.parent


def runner_emf() -> ModuleType:
    """The runner's EMF module (pure, standard library only), loaded from the checkout:
    the runner is not installed in infra's environment."""
    path = REPOSITORY / "runner" / "observe" / "cloudwatch_metrics.py"
    spec = importlib.util.spec_from_file_location("runner_emf_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extracted_metrics(document: dict[str, Any]) -> dict[tuple[str, str, tuple], float]:
    """What CloudWatch extracts from an EMF document: a value per metric identity
    (namespace, name, sorted dimension name/value pairs), one per dimension set."""
    found = {}
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            dims = tuple(sorted((name, document[name]) for name in dimension_set))
            for metric in directive["Metrics"]:
                found[(directive["Namespace"], metric["Name"], dims)] = document[metric["Name"]]
    return found


@pytest.mark.parametrize("command", ["upgrade", "check"])
def test_a_failed_run_raises_the_metric_the_alarm_watches(settings, command):
    program = run_program(settings)
    alarm = program.one("aws:cloudwatch/metricAlarm:MetricAlarm")
    [container] = program.one("aws:ecs/taskDefinition:TaskDefinition",
                              "migrations-task").json("containerDefinitions")
    env = {item["name"]: item["value"] for item in container["environment"]}
    dimensions = {"namespace": env["MIGRATION_METRICS_NAMESPACE"],
                  "service": env["MIGRATION_METRICS_SERVICE"],
                  "environment": env["MIGRATION_METRICS_ENVIRONMENT"]}
    summary = {"event": "summary", "command": command, "outcome": "failed", "exit_code": 3,
               "applied": [], "connect_attempts": 1, "lock_wait_ms": None, "total_ms": 10}
    document = runner_emf().with_metrics(summary, now_s=1_764_540_000, **dimensions)

    watched = (alarm.inputs["namespace"], alarm.inputs["metricName"],
               tuple(sorted(alarm.inputs["dimensions"].items())))
    metrics = extracted_metrics(document)
    assert watched in metrics, f"the alarm watches {watched}; the runner writes {sorted(metrics)}"
    assert metrics[watched] > alarm.inputs["threshold"]
