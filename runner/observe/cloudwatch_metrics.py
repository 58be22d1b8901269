"""Metrics without an agent: the ``summary`` event as a CloudWatch Embedded Metric Format
document (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html).

The ``awslogs`` driver ships the summary line to CloudWatch Logs, which extracts the metrics
named in its ``_aws`` member: no agent, no API call, no extra permission. Pure: a summary in,
the members to add to it out.

Contract:
- The metrics are top-level members (EMF cannot reference nested ones), each a number:
  ``DurationMs``, ``LockWaitMs`` (only when the run needed the lock), ``ConnectAttempts``,
  ``RevisionsApplied``, ``Successes`` (1 on exit 0) and ``Failures`` (1 on a failed run:
  any other exit code but a command's verdict, :data:`VERDICTS`, so a failure alarm never
  pages on `check` answering "pending").
- The dimensions are low-cardinality strings: the configured ``Service`` and
  ``Environment`` (each only when set) and the ``Command``. Two dimension sets (CloudWatch
  makes a metric per set): without ``Command`` (every run of the service: what a failure
  alarm watches, e.g. the Pulumi program's) and with it; one, ``[Command]``, when neither
  ``Service`` nor ``Environment`` is set. ``Phase`` (``expand`` or ``contract``, only when
  a phase was asked for) joins the set with ``Command`` only, so the service's set (and its
  alarm) counts every phase.
- Nothing already in the summary is overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_NAMESPACE = "MigrationRunner"
MILLISECONDS = "Milliseconds"
COUNT = "Count"
#: the exit codes that are a command's answer, not a failure (promise 1: no ``error`` event):
#: ExitCode's values, written out because this module is read on its own (by infra's tests)
VERDICTS: dict[str, frozenset[int]] = {
    "check": frozenset({8, 11, 21}),  # database ahead, pending revisions, lint errors
    "heads": frozenset({7}),  # several heads
    "verify": frozenset({20}),  # a check failed
    "lint": frozenset({21}),  # an error-level finding
    "upgrade": frozenset({21}),  # --dry-run's lint errors
}


def failed(summary: Mapping[str, Any]) -> bool:
    """Whether the run failed: a non-zero exit code that is not its command's verdict."""
    code = summary.get("exit_code")
    return code != 0 and code not in VERDICTS.get(str(summary.get("command")), frozenset())


def metric_values(summary: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """The metrics of one run, by name: (value, unit). A lock wait of ``None`` means no lock
    was needed, which is not a wait of 0 ms: that metric is left out."""
    values = {
        "DurationMs": (int(summary.get("total_ms") or 0), MILLISECONDS),
        "ConnectAttempts": (int(summary.get("connect_attempts") or 0), COUNT),
        "RevisionsApplied": (len(summary.get("applied") or ()), COUNT),
        "Successes": (int(summary.get("exit_code") == 0), COUNT),
        "Failures": (int(failed(summary)), COUNT),
    }
    if summary.get("lock_wait_ms") is not None:
        values["LockWaitMs"] = (int(summary["lock_wait_ms"]), MILLISECONDS)
    return values


def launcher_metrics(summary: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """The ``ecs run`` launcher's own metric, on its ``ecs.summary``: ``Failures`` 1 for a run
    that failed without the runner's summary seen in the task's log (RunTask started
    nothing, the task never ran, the container was killed: no line of the runner's counted
    it), else 0 (the runner's own line counts the run, once)."""
    counted = summary.get("runner_summary") is not None
    return {"Failures": (int(summary.get("exit_code") != 0 and not counted), COUNT)}


def dimension_sets(names: list[str]) -> list[list[str]]:
    """The sets to publish under: the service's (all commands and phases together) and per
    command (and phase)."""
    service = [name for name in names if name not in ("Command", "Phase")]
    return [service, names] if service else [names]


def emf_members(
    summary: Mapping[str, Any],
    *,
    namespace: str,
    service: str | None,
    environment: str | None,
    timestamp_ms: int,
    metrics: Mapping[str, tuple[int, str]] | None = None,
) -> dict[str, Any]:
    """The members to merge into the summary event to make it an EMF document: ``_aws``,
    the dimension members and the metric members (``metrics``, by default the run's:
    :func:`metric_values`)."""
    dimensions = {
        "Service": service,
        "Environment": environment,
        "Command": str(summary.get("command") or "unknown"),
        "Phase": summary.get("phase"),
    }
    dimensions = {name: value for name, value in dimensions.items() if value}
    metrics = metric_values(summary) if metrics is None else metrics
    members: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": dimension_sets(list(dimensions)),
                    "Metrics": [
                        {"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()
                    ],
                }
            ],
        },
        **dimensions,
        **{name: value for name, (value, _) in metrics.items()},
    }
    clashes = set(members) & set(summary)
    assert not clashes, f"EMF members would overwrite summary fields: {sorted(clashes)}"
    return members


def with_metrics(
    summary: Mapping[str, Any],
    *,
    now_s: float,
    namespace: str = DEFAULT_NAMESPACE,
    service: str | None = None,
    environment: str | None = None,
    metrics: Mapping[str, tuple[int, str]] | None = None,
) -> dict[str, Any]:
    """The summary and its :func:`emf_members` in ``namespace`` with the ``service`` and
    ``environment`` dimensions (``MIGRATION_METRICS_*``; the defaults when the settings
    could not be read)."""
    return {
        **summary,
        **emf_members(
            summary,
            namespace=namespace,
            service=service,
            environment=environment,
            timestamp_ms=int(now_s * 1000),
            metrics=metrics,
        ),
    }
