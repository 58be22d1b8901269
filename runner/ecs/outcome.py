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


def container_exited(task: dict[str, Any], container_name: str) -> bool:
    """Whether the migration container has exited (STOPPED, its exit code known), whether or not
    the task has stopped: Fargate deprovisions for tens of seconds after its essential
    container exits, and a non-essential container (an init container) exits while the task
    runs on."""
    return any(
        c.get("name") == container_name
        and c.get("lastStatus") == "STOPPED"
        and c.get("exitCode") is not None
        for c in task.get("containers", [])
    )


def over(task: dict[str, Any], container_name: str) -> bool:
    """Whether following is over: the task stopped, or its migration container exited."""
    return task.get("lastStatus") == "STOPPED" or container_exited(task, container_name)


def run_exit(
    outcome: TaskOutcome | None, stopped_by: str | None, ran: bool, runner_exit: int | None
) -> int:
    """The launcher's exit code: what happened to the migration.

    - Not stopped by the launcher: the container's exit code (43 when it never ran).
    - Stopped (``stopped_by``: ``"timeout"`` or a signal's name), but the migration finished
      all the same: the container exited 0 and the runner's summary (``runner_exit``) said
      0. It migrated; nothing was rolled back: 0.
    - ``--timeout`` passed before the task ever ran (``ran`` False: never seen RUNNING, no
      exit code: stuck in PROVISIONING, pulling the image): 43, nothing ran.
    - Otherwise 44 (timeout) or 45 (a signal, the parent gone), also when the task did not
      stop within the wait (``outcome`` None).
    """
    if stopped_by is None:
        return outcome.exit_code if outcome else int(LaunchExit.INTERRUPTED)
    if outcome is not None and outcome.container_exit_code == 0 and runner_exit == 0:
        return 0
    if stopped_by == "timeout":
        never_ran = not ran and not (outcome and outcome.ran)
        return int(LaunchExit.NOT_STARTED if never_ran else LaunchExit.TIMEOUT)
    return int(LaunchExit.INTERRUPTED)
