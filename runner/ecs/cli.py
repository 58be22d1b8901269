"""``migration-runner ecs run``: parse (options, or MIGRATION_ECS_* variables), build the
boto3 clients from boto3's standard configuration (region, profile, ``AWS_ENDPOINT_URL``),
call :meth:`Launcher.run`, render the result. The container's log lines go to stdout; the
launcher's own events (``ecs.*``, ``error``, and ``ecs.summary`` last) go to stderr as JSON
lines, or readable on a terminal. Needs no database settings.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from runner.ecs.errors import LaunchError, LaunchExit, LaunchUsageError, StoppedBeforeStart
from runner.ecs.launcher import Launcher, LaunchRequest, LaunchResult, Pacing, Stop
from runner.observe import logs
from runner.process.interrupt import early_signal

ENV = "MIGRATION_ECS_"
USER_AGENT = "migration-runner-ecs"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise LaunchUsageError(f"{self.prog}: {message} (see migration-runner ecs run --help)")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    def env(name: str) -> str | None:
        return environ.get(ENV + name) or None

    parser = _Parser(
        prog="migration-runner ecs",
        description="Run the migration as a one-off ECS task and wait for it.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = sub.add_parser(
        "run",
        prog="migration-runner ecs run",
        help="run the task, stream its logs, exit with the container's exit code",
        description="Run the migration task (Fargate, awsvpc), stream its CloudWatch logs to "
        "stdout, wait for it to stop and exit with the container's exit code. Every option "
        f"can also be given as {ENV}<NAME> (e.g. {ENV}CLUSTER).",
    )
    run.add_argument("--cluster", default=env("CLUSTER"), help="the ECS cluster")
    run.add_argument(
        "--task-definition",
        default=env("TASK_DEFINITION"),
        help="FAMILY, FAMILY:REVISION or ARN (FAMILY: the latest ACTIVE revision)",
    )
    run.add_argument("--subnets", default=env("SUBNETS"), help="comma-separated subnet ids")
    run.add_argument(
        "--security-groups",
        default=env("SECURITY_GROUPS"),
        help="comma-separated security group ids",
    )
    run.add_argument(
        "--assign-public-ip",
        action="store_true",
        default=(env("ASSIGN_PUBLIC_IP") or "").lower() in ("1", "true", "yes"),
        help="give the task a public IP (public subnets without a NAT gateway)",
    )
    run.add_argument(
        "--container",
        default=env("CONTAINER"),
        help="the container that migrates (default: the only one)",
    )
    run.add_argument(
        "--image",
        default=env("IMAGE"),
        help="register a new revision with this image for that container, run it",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=env("TIMEOUT"),
        metavar="SECONDS",
        help="stop the task (StopTask) after this long; exit 44 (default: none)",
    )
    run.add_argument(
        "--platform-version",
        default=env("PLATFORM_VERSION"),
        help="Fargate platform version (default: LATEST)",
    )
    run.add_argument(
        "--poll-interval",
        type=_seconds,
        default=env("POLL_INTERVAL") or "5",
        metavar="SECONDS",
        help="longest pause between DescribeTasks calls (default 5)",
    )
    run.add_argument(
        "--drain",
        type=_seconds,
        default=env("DRAIN") or "10",
        metavar="SECONDS",
        help="how long to keep reading logs after the task stopped, when the runner's "
        "summary has not been seen (default 10)",
    )
    run.add_argument(
        "--command",
        nargs=argparse.REMAINDER,
        default=_command_words(env("COMMAND") or "") or None,
        help="the container's command instead of the task definition's, e.g. "
        "--command downgrade -1 (takes the rest of the line)",
    )
    return parser


def _command_words(text: str) -> list[str]:
    """MIGRATION_ECS_COMMAND split as a shell would (an unbalanced quote is a usage error)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise LaunchUsageError(f"{ENV}COMMAND {text!r}: {exc}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a finite number of seconds, more than 0"
        )
    return value


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[LaunchRequest, Pacing]:
    """The request and pacing a command line (and the environment) ask for. Raises
    :class:`LaunchUsageError` naming the option and variable to fix (argparse converts and
    checks a default taken from the environment like a value given on the command line)."""
    args = build_parser(environ).parse_args(argv)
    missing = [
        f"--{name.replace('_', '-')} ({ENV}{name.upper()})"
        for name in ("cluster", "task_definition", "subnets", "security_groups")
        if not getattr(args, name)
    ]
    if missing:
        raise LaunchUsageError("migration-runner ecs run needs " + ", ".join(missing))
    _check_values(args, build_parser(environ))
    request = LaunchRequest(
        cluster=args.cluster,
        task_definition=args.task_definition,
        subnets=_ids(args.subnets),
        security_groups=_ids(args.security_groups),
        assign_public_ip=args.assign_public_ip,
        container=args.container,
        image=args.image,
        command=tuple(args.command) if args.command else None,
        timeout_s=args.timeout,
        platform_version=args.platform_version,
    )
    return request, Pacing(
        first_poll_s=min(1.0, args.poll_interval), max_poll_s=args.poll_interval, drain_s=args.drain
    )


def _check_values(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """What argparse lets through that no AWS call should see. Raises
    :class:`LaunchUsageError`."""
    if args.command == []:
        raise LaunchUsageError("--command needs the command to run, e.g. --command check")
    for name in ("subnets", "security_groups"):
        if not _ids(getattr(args, name)):
            raise LaunchUsageError(
                f"--{name.replace('_', '-')} ({ENV}{name.upper()}) names no id: "
                "give comma-separated ids"
            )
    for name in ("cluster", "task_definition", "image", "container", "platform_version"):
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise LaunchUsageError(f"--{name.replace('_', '-')} ({ENV}{name.upper()}) is empty")
    options = {o for action in _run_actions(parser) for o in action.option_strings}
    taken = [word for word in args.command or () if word.split("=")[0] in options]
    if taken:
        raise LaunchUsageError(
            f"--command takes the rest of the line, and got the launcher's {', '.join(taken)}: "
            "put --command last"
        )


def _run_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices["run"]._actions if a.dest != "help"]


def _ids(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stop: Stop | None = None,
) -> int:
    """``migration-runner ecs ...``; returns the exit code (see :class:`LaunchExit`). Without
    a ``stop`` given, SIGINT and SIGTERM are taken over to stop the task."""
    environ = os.environ if environ is None else environ
    logs.configure(fmt=environ.get("MIGRATION_LOG_FORMAT") or "auto", stream=sys.stderr)
    log = logs.get("runner.ecs")
    if stop is None:
        stop = Stop()
        stop.install()
        if early_signal() is not None:  # one that came while Python started
            stop.request(str(early_signal()))
    result: LaunchResult | None = None
    launcher: Launcher | None = None
    try:
        if stop.reason is not None:
            raise StoppedBeforeStart(
                f"stopped by {stop.reason} before anything ran", signal=stop.reason
            )
        request, pacing = parse(sys.argv[2:] if argv is None else argv, environ)
        launcher = _launcher(pacing, stop, log)
        result = launcher.run(request)
        code = result.exit_code
        _log_result(log, result)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except Exception as err:
        failure = err if isinstance(err, LaunchError) else _aws_failure(err)
        code = int(failure.exit_code if failure else LaunchExit.INTERNAL)
        task_arn = getattr(launcher, "task_arn", None)
        message = (
            failure.message
            if failure
            else f"unexpected {type(err).__name__}: {err}; please report this"
        )
        if task_arn and not isinstance(err, LaunchError):
            message += (
                f" (the task {task_arn} was started and may still be running: "
                "check it, or stop it, in the ECS console)"
            )
        log.error(
            "error",
            error_code=failure.code if failure else "internal",
            message=message,
            exit_code=code,
            task_arn=task_arn,
            **(failure.fields if failure else {}),
        )
    log.info("ecs.summary", **_summary(result, code, getattr(launcher, "task_arn", None)))
    return code


def _launcher(pacing: Pacing, stop: Stop, log: Any) -> Launcher:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise LaunchUsageError(
            "migration-runner ecs needs boto3: install migration-runner[aws]"
        ) from None
    from runner.ecs.logs_tail import render

    session = boto3.session.Session()
    config = Config(retries={"mode": "standard", "max_attempts": 8}, user_agent_extra=USER_AGENT)
    tty = sys.stdout.isatty()

    def out(event: dict[str, Any]) -> None:
        print(render(event.get("message", ""), tty), flush=True)

    def logs_client(region: str | None) -> Any:
        return session.client("logs", region_name=region, config=config)

    return Launcher(
        session.client("ecs", config=config),
        logs_client,
        out=out,
        log=log,
        pacing=pacing,
        stop=stop,
    )


def _aws_failure(err: Exception) -> LaunchError | None:
    """A botocore failure as a message naming what to fix; None for anything else (a bug)."""
    try:
        from botocore import exceptions
    except ImportError:
        return None
    if isinstance(err, exceptions.ClientError):
        error = err.response.get("Error", {})
        kind = error.get("Code", "error")
        hint = ""
        if "AccessDenied" in kind or "Unauthorized" in kind:
            hint = " (the README lists the IAM actions the launcher needs)"
        elif kind == "ClusterNotFoundException":
            hint = " (check --cluster / MIGRATION_ECS_CLUSTER and the region)"
        return LaunchError(f"{err.operation_name} failed: {kind}: {error.get('Message', '')}{hint}")
    if isinstance(err, exceptions.NoRegionError):
        return LaunchError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
        )
    if isinstance(err, exceptions.NoCredentialsError):
        return LaunchError(
            "no AWS credentials found: give the pipeline a role (e.g. "
            "aws-actions/configure-aws-credentials) or set AWS_PROFILE"
        )
    if isinstance(err, exceptions.BotoCoreError):
        return LaunchError(f"AWS call failed: {err}")
    return None


def _summary(result: LaunchResult | None, code: int, task_arn: str | None) -> dict[str, Any]:
    if result is None:
        return {"exit_code": code, "task_arn": task_arn}
    outcome = result.outcome
    return {
        "exit_code": code,
        "task_arn": result.task_arn,
        "task_definition": result.task_definition,
        "registered": result.registered,
        "container_exit_code": outcome.container_exit_code if outcome else None,
        "stop_code": outcome.stop_code if outcome else None,
        "stopped_reason": outcome.stopped_reason if outcome else None,
        "stopped_by": result.stopped_by,
        "duration_s": result.duration_s,
        "log_events": result.events,
        "runner_summary": result.runner_summary,
    }


def _log_result(log: Any, result: LaunchResult) -> None:
    """One ``error`` event for every outcome but success (the summary follows)."""
    outcome = result.outcome
    if result.stopped_by is not None:
        cause = (
            "--timeout passed"
            if result.stopped_by == "timeout"
            else f"{result.stopped_by} received"
        )
        stopped = (
            "it stopped"
            + (
                f" (container exit code {outcome.container_exit_code})"
                if outcome and outcome.ran
                else ""
            )
            if outcome
            else "it had not stopped when the launcher gave up waiting"
        )
        log.error(
            "error",
            error_code="ecs_timeout" if result.stopped_by == "timeout" else "ecs_interrupted",
            exit_code=result.exit_code,
            task_arn=result.task_arn,
            message=f"{cause}: the task was stopped with StopTask and {stopped}; the runner "
            "rolls back the revision in flight and releases its lock. Run again",
        )
    elif outcome is None:
        log.error(
            "error",
            error_code="ecs_interrupted",
            exit_code=result.exit_code,
            task_arn=result.task_arn,
            message="stopped waiting before the task stopped",
        )
    elif outcome.exit_code != 0:
        log.error(
            "error",
            error_code="ecs_container_failed" if outcome.ran else "ecs_not_started",
            exit_code=result.exit_code,
            task_arn=result.task_arn,
            stop_code=outcome.stop_code,
            stopped_reason=outcome.stopped_reason,
            container_reason=outcome.container_reason,
            message=outcome.explanation(),
        )
