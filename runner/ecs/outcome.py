"""Pure: what a stopped task (a DescribeTasks entry) means for the pipeline, and what
RunTask's ``failures[]`` say."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.ecs.errors import LaunchExit


@dataclass(frozen=True)
class TaskOutcome:
    """``exit_code`` is the container's own code when it has one, else
    :attr:`LaunchExit.NOT_STARTED`; the other fields are ECS's explanation, as given."""

    exit_code: int
    container_exit_code: int | None
    stop_code: str | None
    stopped_reason: str | None
    container_reason: str | None

    @property
    def ran(self) -> bool:
        return self.container_exit_code is not None

    def explanation(self) -> str:
        """One sentence a person can act on (for the ``error`` event)."""
        if self.ran:
            return (
                f"the migration container exited with {self.container_exit_code}: its own "
                "error event above says what to fix (README, Exit codes)"
            )
        facts = "; ".join(
            f"{name}: {value}"
            for name, value in (
                ("stopCode", self.stop_code),
                ("stoppedReason", self.stopped_reason),
                ("container reason", self.container_reason),
            )
            if value
        )
        return (
            "the task stopped without the migration container's exit code: it never ran "
            f"(image pull, secrets, network or capacity?). {facts or 'ECS gave no reason'}"
        )


def task_outcome(task: dict[str, Any], container_name: str) -> TaskOutcome:
    """The outcome of a STOPPED task for its container ``container_name``. A container that
    is missing from the task, or has no ``exitCode``, never ran (or ECS lost track of it)."""
    containers = [c for c in task.get("containers", []) if c.get("name") == container_name]
    found = containers[0] if containers else {}
    code = found.get("exitCode")
    return TaskOutcome(
        exit_code=int(code) if code is not None else int(LaunchExit.NOT_STARTED),
        container_exit_code=code,
        stop_code=task.get("stopCode"),
        stopped_reason=task.get("stoppedReason"),
        container_reason=found.get("reason"),
    )


def run_failures(failures: list[dict[str, Any]]) -> str:
    """RunTask's ``failures[]`` as one line: each ARN with its reason and detail."""
    return "; ".join(
        " ".join(
            str(part) for part in (f.get("arn", "task"), f.get("reason"), f.get("detail")) if part
        )
        for f in failures
    )
