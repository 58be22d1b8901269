"""The metrics the runner writes into its `summary` log event (CloudWatch Embedded Metric
Format), named once here for both sides: the container's settings and the alarm's metric."""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "MigrationRunner"
FAILURES = "Failures"  # 1 on a failed run, 0 on success or a verdict (`check` 11)


@dataclass(frozen=True)
class RunnerMetrics:
    service: str
    environment: str
    namespace: str = NAMESPACE

    def container_environment(self) -> dict[str, str]:
        """The runner's settings that make it write these metrics."""
        return {
            "MIGRATION_METRICS_NAMESPACE": self.namespace,
            "MIGRATION_METRICS_SERVICE": self.service,
            "MIGRATION_METRICS_ENVIRONMENT": self.environment,
        }

    def dimensions(self) -> dict[str, str]:
        """The dimensions the runner attaches, as an alarm must name them."""
        return {"Service": self.service, "Environment": self.environment}
