"""A run's last words: the one ``error`` event, the one ``summary`` event, and ending the
process without Python's teardown. Rendering only: which exit code a run gets is the CLI's
decision (:mod:`runner.cli.main`)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

from runner.errors import ExitCode, RunnerError
from runner.observe import cloudwatch_metrics as emf
from runner.observe import logs
from runner.outcome import Outcome

if TYPE_CHECKING:
    from runner.observe.logs import Log

#: held while the one summary is logged: by the main thread, or by the last resort after a
#: signal (see :mod:`runner.process.interrupt`), never both
SUMMARY_ONCE = threading.Lock()


def summary(command: str, outcome: Outcome, facts: Any, code: ExitCode) -> dict[str, Any]:
    """The fields of the one ``summary`` event."""
    return {
        "command": command,
        "outcome": outcome.value,
        "from_revision": facts.from_revision,
        "to_revision": facts.to_revision,
        "applied": facts.applied,
        "connect_attempts": facts.connect_attempts,
        "lock_wait_ms": facts.lock_wait_ms,
        "attempts": facts.attempts,
        "longest_revision": facts.longest_revision,
        "phase": facts.phase,
        "held": facts.held,
        "snapshot": facts.snapshot,
        "backfills": facts.backfills,
        "not_rolled_back": facts.not_rolled_back or None,
        "exit_code": int(code),
        "total_ms": int((time.monotonic() - facts.started) * 1000),
    }


def metric_dimensions(settings: Any) -> dict[str, Any]:
    """The summary's EMF namespace and dimensions (``MIGRATION_METRICS_*``) from
    ``settings``, or, when the run could not read them (None), from the environment's own
    ``MIGRATION_METRICS_*`` read one by one: the failure alarm watches the service's
    dimensions, whatever ended the run."""
    from runner.config.settings import metrics_settings

    source = settings if settings is not None else metrics_settings()
    return {
        "namespace": source.migration_metrics_namespace,
        "service": source.migration_metrics_service,
        "environment": source.migration_metrics_environment,
    }


def log_error(log: Log, err: RunnerError) -> None:
    """The one ``error`` event of a failed run."""
    log.error(
        "error",
        error_code=err.code,
        message=err.message,
        exit_code=int(err.exit_code),
        **err.fields,
    )


def report(
    err: RunnerError, command: str, outcome: Outcome, facts: Any, settings: Any = None
) -> None:
    """The ``error`` event and the ``summary`` (with its EMF metrics: CloudWatch counts
    these failures too) of a run that ends outside the CLI's flow."""
    log = logs.get()
    log_error(log, err)
    log.info(
        "summary",
        **emf.with_metrics(
            summary(command, outcome, facts, err.exit_code),
            now_s=time.time(),
            **metric_dimensions(settings),
        ),
    )


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once the logs are flushed, without the interpreter's
    teardown (it finalises some 500 modules and has nothing left to do)."""
    logs.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: the exit code tells
            if stream is not None:  # started with the descriptor closed
                stream.flush()
    os._exit(code)
