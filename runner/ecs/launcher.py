"""Run the migration as a one-off ECS task and wait for it: the orchestration.

One verb, :meth:`Launcher.run`: describe the task definition (and register a revision with a
new image, if asked), RunTask, stream the container's log events while polling DescribeTasks
with backoff until STOPPED, drain the remaining events, and return a :class:`LaunchResult`.
On ``--timeout`` or a stop request (SIGINT/SIGTERM, via :class:`Stop`) it calls StopTask, so
the runner in the container rolls back and releases its lock, and still waits for the task
to stop and drains its logs. The launcher never picks an exit code for the process itself
except through the result; AWS errors surface as botocore exceptions for the CLI to render.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.ecs import runargs, taskdef
from runner.ecs.aws_errors import denied, failure_text, transient
from runner.ecs.errors import (
    FollowFailed,
    LaunchError,
    LaunchUsageError,
    RunTaskFailed,
    StoppedBeforeStart,
    TaskMissing,
)
from runner.ecs.logs_tail import LogTail, runner_summary
from runner.ecs.outcome import TaskOutcome, over, run_exit, run_failures, task_outcome
from runner.process.interrupt import parent_at_start

if TYPE_CHECKING:
    from runner.observe.logs import Log

STARTED_BY = "migration-runner"
PARENT_EXITED = "parent-exit"  # the stop reason when the parent process went away


@dataclass(frozen=True)
class LaunchRequest:
    cluster: str
    task_definition: str  # family, family:revision or ARN
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    assign_public_ip: bool = False
    container: str | None = None
    image: str | None = None
    command: tuple[str, ...] | None = None
    timeout_s: float | None = None
    platform_version: str | None = None
    stop_with_parent: bool = False  # StopTask when the process that started us is gone
    parent_pid: int | None = None  # with stop_with_parent: that process (default: our parent)
    launch_type: str | None = None  # FARGATE, EC2, EXTERNAL (default: FARGATE)
    capacity_providers: tuple[tuple[str, int, int], ...] = ()  # (name, weight, base)
    network_from_service: str | None = None  # run with this service's network (and placement)
    environment: tuple[tuple[str, str], ...] = ()  # the container's, added to its own
    cpu: str | None = None  # task-level overrides
    memory: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    propagate_tags: str | None = None  # TASK_DEFINITION or NONE


@dataclass(frozen=True)
class Pacing:
    """How often to ask AWS. DescribeTasks backs off from ``first_poll_s`` to ``max_poll_s``
    (log events are fetched at the same pace); after the task stops, events are drained until
    the runner's ``summary`` is seen or ``drain_s`` passes (awslogs ships within seconds);
    after StopTask the task gets ``stop_wait_s`` to stop (Fargate's stopTimeout is 120 s at
    most)."""

    first_poll_s: float = 1.0
    max_poll_s: float = 5.0
    drain_s: float = 10.0
    stop_wait_s: float = 150.0
    #: how long DescribeTasks may not know a task RunTask started (eventual consistency)
    missing_grace_s: float = 60.0
    #: DescribeTasks calls in a row that may fail transiently (each after botocore's own 8
    #: attempts) before following gives up and the task is stopped
    blind_polls: int = 5
    #: StopTask attempts (each after botocore's own), a transient failure tried again
    stop_attempts: int = 4


@dataclass
class LaunchResult:
    exit_code: int
    task_arn: str
    task_definition: str  # family:revision that ran
    registered: bool  # True when --image registered that revision
    duration_s: float
    outcome: TaskOutcome | None  # None when the task did not stop within the stop wait
    stopped_by: str | None = None  # "timeout", or the signal's name
    runner_summary: dict[str, Any] | None = None
    events: int = 0  # log events printed


class Stop:
    """A stop request from a signal handler, seen by the launcher at its next poll.
    :meth:`wait` sleeps, but wakes at once for a new request."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.repeated = False
        self._event = threading.Event()

    def install(self) -> None:
        """Every signal that ends a run (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE) requests
        a stop (main thread only)."""
        from runner.process.interrupt import STOPPING

        for sig in STOPPING:
            signal.signal(sig, self._handle)

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        else:
            self.repeated = True
        self._event.set()

    def wait(self, seconds: float) -> None:
        self._event.wait(seconds)
        self._event.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        self.request(signal.Signals(signum).name)

    def watch_parent(self, pid: int | None = None, interval_s: float = 0.25) -> None:
        """Request a stop (:data:`PARENT_EXITED`) once the parent process is gone, seen as a
        change of the parent pid (the orphan is re-parented), or once process ``pid`` has
        exited. For callers that end the launcher's parent with SIGKILL, which no handler
        can see: pulumi-command does on a cancelled ``pulumi up`` (see the gate in infra/).
        ``pid`` is for a launcher started through a wrapper that outlives that kill (``uv
        run`` waits for its child): the gate passes its shell's. A daemon thread polls."""
        parent = parent_at_start()

        def watch() -> None:
            while self.reason is None and os.getppid() == parent and alive(pid):
                time.sleep(interval_s)
            if self.reason is None:
                self.request(PARENT_EXITED)

        threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` still runs (None: nothing to watch). A zombie, dead but not
    yet reaped by its parent, has exited (Linux's /proc tells; elsewhere it counts as
    running until it is reaped)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: it exists
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def stop_reason(cause: str) -> str:
    """The StopTask reason for a stop request (ECS shows it as the task's stoppedReason)."""
    if cause == PARENT_EXITED:
        return "migration-runner ecs run: the process that started it exited"
    return f"migration-runner ecs run received {cause}"


@dataclass
class _Run:
    """The state of one task being followed."""

    task_arn: str
    container: str
    tail: LogTail | None
    started: float
    summary: dict[str, Any] | None = None
    events: int = 0
    stopped_by: str | None = None
    stop_sent_at: float | None = None
    task: dict[str, Any] = field(default_factory=dict)
    ran: bool = False  # seen RUNNING (or its container exited) at least once
    blind: int = 0  # DescribeTasks failures in a row
    logs_failing: bool = False  # the last GetLogEvents failed (warned once per streak)


class Launcher:
    """``ecs`` is a boto3 ECS client; ``logs_client(region)`` a CloudWatch Logs client for
    the ``awslogs-region`` of the container (None: the default region); ``out`` receives
    each container log event; ``log`` is a structlog logger for the launcher's own events."""

    def __init__(
        self,
        ecs: Any,
        logs_client: Callable[[str | None], Any],
        *,
        out: Callable[[dict[str, Any]], None],
        log: Log,
        pacing: Pacing = Pacing(),
        stop: Stop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ecs = ecs
        self._logs_client = logs_client
        self._out = out
        self._log = log
        self._pacing = pacing
        self._stop = stop or Stop()
        self._clock = clock
        #: the task started, once RunTask has answered (for an error that comes after)
        self.task_arn: str | None = None
        #: the migrating container's MIGRATION_METRICS_* (with the request's overrides),
        #: once its task definition is known: the dimensions of the launcher's own metric
        self.metric_settings: dict[str, str] = {}
        self._migrate: dict[str, Any] | None = None  # its container definition, once known

    def run(self, request: LaunchRequest) -> LaunchResult:
        """Run the task to its end. Raises :class:`RunTaskFailed` when RunTask starts nothing,
        :class:`~runner.ecs.errors.LaunchUsageError` for a container that cannot be chosen,
        botocore's errors for failed AWS calls before RunTask, and once the task is started
        only :class:`~runner.ecs.errors.LaunchError`: a task started is never abandoned (an
        AWS call that fails for good stops it, and the error says whether StopTask worked)."""
        if request.stop_with_parent:
            self._stop.watch_parent(request.parent_pid)
        definition, migrate, args, registered = self._prepare(request)
        if self._stop.reason is not None:
            raise StoppedBeforeStart(
                f"stopped by {self._stop.reason} before the task was started: nothing ran",
                signal=self._stop.reason,
            )
        started = self._clock()
        task_arn = self.task_arn = self._run_task(args)
        run = _Run(task_arn=task_arn, container=migrate["name"], started=started, tail=None)
        try:
            run.tail = self._started(run, definition, migrate)
            settled = self._follow(run, request)
            self._drain(run)
        except LaunchError:
            raise
        except Exception as exc:
            raise self._cannot_follow(run, request, exc) from exc
        outcome = task_outcome(run.task, run.container) if settled else None
        return LaunchResult(
            exit_code=run_exit(
                outcome, run.stopped_by, run.ran, (run.summary or {}).get("exit_code")
            ),
            task_arn=task_arn,
            task_definition=taskdef.label(definition),
            registered=registered,
            duration_s=round(self._clock() - started, 3),
            outcome=outcome,
            stopped_by=run.stopped_by,
            runner_summary=run.summary,
            events=run.events,
        )

    def _prepare(
        self, request: LaunchRequest
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bool]:
        """The task definition to run (registered with ``--image``), its migrating
        container, RunTask's arguments (decided, and refused, before anything is
        registered), and whether a revision was registered."""
        described = self._ecs.describe_task_definition(
            taskDefinition=request.task_definition, include=["TAGS"]
        )
        definition = described["taskDefinition"]
        migrate = self._migrate = taskdef.container(definition, request.container)
        self.metric_settings = {
            name: value
            for name, value in (
                *((e["name"], e["value"]) for e in migrate.get("environment") or []),
                *request.environment,
            )
            if name.startswith("MIGRATION_METRICS_")
        }
        args = runargs.run_task_args(
            request, definition, migrate["name"], self._service(request), STARTED_BY
        )
        if request.image is None or request.image == migrate["image"]:
            return definition, migrate, args, False
        new = taskdef.with_image(
            definition,
            described.get("tags"),
            migrate["name"],
            request.image,
            runargs.registerable(self._ecs.meta.service_model),
        )
        definition = self._ecs.register_task_definition(**new)["taskDefinition"]
        args["taskDefinition"] = definition["taskDefinitionArn"]
        migrate = self._migrate = taskdef.container(definition, migrate["name"])
        self._log.info(
            "ecs.registered",
            task_definition=taskdef.label(definition),
            container=migrate["name"],
            image=request.image,
        )
        return definition, migrate, args, True

    def _started(
        self, run: _Run, definition: dict[str, Any], migrate: dict[str, Any]
    ) -> LogTail | None:
        """Say the task started, and where its log is (the tail to follow, if any)."""
        where = taskdef.log_location(migrate, run.task_arn)
        self._log.info(
            "ecs.started",
            task_arn=run.task_arn,
            task_definition=taskdef.label(definition),
            container=migrate["name"],
            essential=migrate.get("essential", True),
            log_group=where and where.group,
            log_stream=where and where.stream,
        )
        if where is None:
            self._log.warning(
                "ecs.no_logs",
                message="the container does not use the awslogs "
                "driver with a stream prefix: its events cannot be followed",
            )
            return None
        return LogTail(self._logs_client(where.region), where.group, where.stream)

    def publish(self, line: str) -> None:
        """Write ``line`` (``ecs.summary`` with its EMF metric) into the migrating
        container's log group, stream ``<prefix>/launcher/<task id>``, where CloudWatch
        extracts its metric as from the runner's own lines (the launcher's stderr is a CI
        log CloudWatch never sees). Only once the task definition is known and its
        container logs with awslogs; a failure is a warning (``ecs.metric_undelivered``)."""
        if self._migrate is None:
            return
        where = taskdef.log_location(
            self._migrate, self.task_arn or f"not-started-{uuid.uuid4().hex}", "launcher"
        )
        if where is None:
            return
        try:
            client = self._logs_client(where.region)
            with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
                client.create_log_stream(logGroupName=where.group, logStreamName=where.stream)
            client.put_log_events(
                logGroupName=where.group,
                logStreamName=where.stream,
                logEvents=[{"timestamp": int(time.time() * 1000), "message": line}],
            )
        except Exception as exc:
            self._log.warning(
                "ecs.metric_undelivered",
                log_group=where.group,
                error=failure_text(exc),
                message="the failure could not be written to CloudWatch for the alarm "
                "(logs:CreateLogStream, logs:PutLogEvents on the log group)",
            )

    def _service(self, request: LaunchRequest) -> dict[str, Any] | None:
        """The service named by ``network_from_service``, as DescribeServices has it."""
        if request.network_from_service is None:
            return None
        found = self._ecs.describe_services(
            cluster=request.cluster, services=[request.network_from_service]
        )
        services = [s for s in found.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise LaunchUsageError(
                f"--network-from-service: no service "
                f"{request.network_from_service!r} in cluster "
                f"{request.cluster!r}"
            )
        return dict(services[0])

    def _run_task(self, args: dict[str, Any]) -> str:
        response = self._ecs.run_task(**args)
        tasks = response.get("tasks") or []
        if not tasks:
            raise RunTaskFailed(
                "RunTask started no task: "
                + (run_failures(response.get("failures") or []) or "ECS gave no reason"),
                failures=response.get("failures") or [],
            )
        return str(tasks[0]["taskArn"])

    def _follow(self, run: _Run, request: LaunchRequest) -> bool:
        """Poll until the task is STOPPED or its migration container has exited (True), or
        it did not stop within the stop wait after StopTask, or a second stop request came
        (False). Raises what makes following impossible (:meth:`run` stops the task)."""
        delay = self._pacing.first_poll_s
        while True:
            self._pump(run)
            described = self._describe(run, request)
            if described is not None:
                run.task = described
                run.ran = run.ran or described.get("lastStatus") in ("RUNNING", "DEACTIVATING")
                if over(run.task, run.container):
                    self._rest_of_task(run, request)
                    return True
            now = self._clock()
            if run.stop_sent_at is None:
                if self._stop.reason is not None:
                    self._stop_task(run, request, self._stop.reason, stop_reason(self._stop.reason))
                elif request.timeout_s is not None and now - run.started >= request.timeout_s:
                    self._stop_task(
                        run,
                        request,
                        "timeout",
                        f"migration-runner ecs run: --timeout {request.timeout_s:g} s passed",
                    )
            elif self._stop.repeated or now - run.stop_sent_at >= self._pacing.stop_wait_s:
                self._log.warning(
                    "ecs.not_stopped",
                    task_arn=run.task_arn,
                    last_status=run.task.get("lastStatus"),
                    message="gave up waiting for the stopped task to stop",
                )
                return False
            pause = delay
            if request.timeout_s is not None and run.stop_sent_at is None:
                pause = max(0.0, min(delay, run.started + request.timeout_s - now))
            self._stop.wait(pause)
            delay = min(delay * 2, self._pacing.max_poll_s)

    def _rest_of_task(self, run: _Run, request: LaunchRequest) -> None:
        """The migration container exited: its code is the run's. A task that runs on (the
        container is not essential: the app's containers of an init-container task
        definition start after it) is not the migration's to leave running: StopTask."""
        essential = (self._migrate or {}).get("essential", True)  # ECS stops that task itself
        if essential or "STOPPED" in (run.task.get("lastStatus"), run.task.get("desiredStatus")):
            return
        failure = self._send_stop(
            request, run.task_arn, "migration-runner ecs run: the migration container exited"
        )
        self._log.info(
            "ecs.container_exited",
            task_arn=run.task_arn,
            container=run.container,
            message="the migration container exited while its task runs on: "
            + (
                "the task was stopped (StopTask)"
                if failure is None
                else f"StopTask failed ({failure}); stop it: {stop_command(request, run)}"
            ),
        )

    def _describe(self, run: _Run, request: LaunchRequest) -> dict[str, Any] | None:
        """The task as DescribeTasks sees it, or None while ECS does not know it yet (its
        answer MISSING right after RunTask: eventual consistency, documented) or the call
        failed transiently (up to ``blind_polls`` times in a row; then it is raised). Past
        ``missing_grace_s`` the task is stopped (it may run unseen) and
        :class:`TaskMissing` raised: a task the launcher started is never abandoned."""
        try:
            answer = self._ecs.describe_tasks(cluster=request.cluster, tasks=[run.task_arn])
        except Exception as exc:
            run.blind += 1
            if not transient(exc) or run.blind > self._pacing.blind_polls:
                raise
            if run.blind == 1:
                self._log.warning(
                    "ecs.describe_failed",
                    task_arn=run.task_arn,
                    error=failure_text(exc),
                    message="DescribeTasks failed: asking again at the next poll (the task "
                    f"is stopped after {self._pacing.blind_polls} such failures in a row)",
                )
            return None
        run.blind = 0
        if answer.get("tasks"):
            return dict(answer["tasks"][0])
        if self._clock() - run.started < self._pacing.missing_grace_s:
            return None
        failure = self._send_stop(
            request, run.task_arn, "migration-runner ecs run: DescribeTasks never found the task"
        )
        raise TaskMissing(
            f"ECS started task {run.task_arn} but DescribeTasks answered "
            f"{run_failures(answer.get('failures') or []) or 'no task'} for "
            f"{self._pacing.missing_grace_s:g} s: "
            + (
                "StopTask was sent; check the task in the ECS console before running again"
                if failure is None
                else f"StopTask failed too ({failure}); stop it: {stop_command(request, run)}"
            ),
            task_arn=run.task_arn,
        )

    def _stop_task(self, run: _Run, request: LaunchRequest, cause: str, reason: str) -> None:
        failure = self._send_stop(request, run.task_arn, reason)
        if failure is not None:
            raise FollowFailed(
                f"{cause}: StopTask failed ({failure}): the task {run.task_arn} may still be "
                f"running, migrating with its lock held; stop it: {stop_command(request, run)}",
                task_arn=run.task_arn,
                stopped=False,
            )
        self._log.warning("ecs.stopping", task_arn=run.task_arn, cause=cause, reason=reason)
        run.stopped_by = cause
        run.stop_sent_at = self._clock()

    def _send_stop(self, request: LaunchRequest, task_arn: str, reason: str) -> str | None:
        """StopTask, a transient failure tried again (``stop_attempts`` in all, backing
        off); None once ECS accepted it, else what failed last."""
        pause = self._pacing.first_poll_s
        for attempt in range(1, self._pacing.stop_attempts + 1):
            try:
                self._ecs.stop_task(cluster=request.cluster, task=task_arn, reason=reason[:255])
                return None
            except Exception as exc:
                if not transient(exc) or attempt == self._pacing.stop_attempts:
                    return failure_text(exc)
            time.sleep(pause)
            pause = min(pause * 2, self._pacing.max_poll_s)
        return None  # not reached: the last attempt returns

    def _cannot_follow(self, run: _Run, request: LaunchRequest, exc: Exception) -> FollowFailed:
        """The error for an AWS call (or anything else) that failed for good while the task
        ran: the task is stopped first, unless StopTask was sent already."""
        what = failure_text(exc)
        if run.stop_sent_at is not None:
            failure = None
            done = f"StopTask had been sent ({run.stopped_by})"
        else:
            failure = self._send_stop(
                request, run.task_arn, f"migration-runner ecs run cannot follow it: {what}"
            )
            done = "it was stopped (StopTask)"
        if failure is None:
            message = (
                f"{what}: following task {run.task_arn} cannot go on, and {done}: the runner "
                "rolls back the revision in flight and releases its lock. Run again once AWS "
                "answers"
            )
        else:
            message = (
                f"{what}: following task {run.task_arn} cannot go on, and StopTask failed too "
                f"({failure}): it may still be running, migrating with its lock held; stop "
                f"it: {stop_command(request, run)}"
            )
        return FollowFailed(message, task_arn=run.task_arn, stopped=failure is None)

    def _drain(self, run: _Run) -> None:
        """Fetch what awslogs ships after the task stopped: until the runner's summary (its
        last event) has been seen, or ``drain_s`` passes."""
        if run.tail is None:
            return
        deadline = self._clock() + self._pacing.drain_s
        delay = self._pacing.first_poll_s
        while True:
            self._pump(run)
            if run.summary is not None or self._clock() >= deadline:
                return
            self._stop.wait(min(delay, max(0.0, deadline - self._clock())))
            delay = min(delay * 2, self._pacing.max_poll_s)

    def _pump(self, run: _Run) -> None:
        """Print the log events that arrived. A failed GetLogEvents never ends the run:
        denied, the task is followed without its logs from then on; anything else is
        tried again at the next poll (one warning per streak of failures)."""
        if run.tail is None:
            return
        try:
            fetched = run.tail.fetch()
        except Exception as exc:
            if denied(exc) or not transient(exc):
                run.tail = None
            if not run.logs_failing or run.tail is None:
                self._log.warning(
                    "ecs.logs_unavailable",
                    task_arn=run.task_arn,
                    error=failure_text(exc),
                    message="cannot read the container's logs: following the task "
                    + ("without them" if run.tail is None else "and asking again")
                    + "; its exit code is still the run's",
                )
            run.logs_failing = True
            return
        run.logs_failing = False
        for event in fetched:
            run.events += 1
            self._out(event)
            summary = runner_summary(event.get("message", ""))
            if summary is not None:
                run.summary = summary


def stop_command(request: LaunchRequest, run: _Run) -> str:
    """The command that stops the task by hand."""
    return f"aws ecs stop-task --cluster {request.cluster} --task {run.task_arn}"
