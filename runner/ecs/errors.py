"""The launcher's own failures and exit codes.

The container's exit code is passed through as it is (0 to 255; the runner's codes are 0-21
and 130), so the launcher's own codes sit in a range the runner never uses: a pipeline can
tell "the migration failed" from "the migration never ran, or was stopped".
"""

from __future__ import annotations

import enum

from runner.errors import RunnerError


class LaunchExit(enum.IntEnum):
    """Documented in docs/reference.md and docs/deploying-on-ecs.md. Stable: pipelines act on them."""

    INTERNAL = 1  # a bug in the launcher: please report it
    USAGE = 40  # the command line or a MIGRATION_ECS_* variable is missing or wrong
    AWS_ERROR = 41  # an AWS call failed: credentials, permissions, unknown cluster or family
    RUN_FAILED = 42  # RunTask started no task (its failures[] say why)
    NOT_STARTED = 43  # the task stopped without the container's exit code: it never ran
    TIMEOUT = 44  # --timeout passed: the task was stopped (StopTask)
    INTERRUPTED = 45  # SIGINT or SIGTERM: the task was stopped (StopTask)


class LaunchError(RunnerError):
    """A launcher failure: ``message`` says what to fix, ``exit_code`` is a :class:`LaunchExit`."""

    exit_code = LaunchExit.AWS_ERROR  # type: ignore[assignment]  # its own range (40-45)
    code = "ecs_aws_error"


class LaunchUsageError(LaunchError):
    exit_code = LaunchExit.USAGE
    code = "ecs_usage"


class RunTaskFailed(LaunchError):
    exit_code = LaunchExit.RUN_FAILED
    code = "ecs_run_failed"


class StoppedBeforeStart(LaunchError):
    exit_code = LaunchExit.INTERRUPTED
    code = "ecs_interrupted"


class TaskMissing(LaunchError):
    """DescribeTasks never found the task RunTask started: it was stopped (StopTask)."""

    exit_code = LaunchExit.NOT_STARTED
    code = "ecs_task_missing"


class FollowFailed(LaunchError):
    """An AWS call failed for good after RunTask (or StopTask failed): the message says
    whether the task was stopped, or how to stop it."""

    code = "ecs_follow_failed"
