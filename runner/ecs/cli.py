"""``migration-runner ecs run``: parse (options, or MIGRATION_ECS_* variables), build the
boto3 clients from boto3's standard configuration (region, profile, ``AWS_ENDPOINT_URL``),
call :meth:`Launcher.run`, render the result. The container's log lines go to stdout; the
launcher's own events (``ecs.*``, ``error``, and ``ecs.summary`` last) go to stderr as JSON
lines, or readable on a terminal. Needs no database settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from runner.ecs.errors import LaunchError, LaunchExit, LaunchUsageError, StoppedBeforeStart
from runner.ecs.launcher import PARENT_EXITED, Launcher, LaunchRequest, LaunchResult, Pacing, Stop
from runner.observe import cloudwatch_metrics as emf
from runner.observe import logs
from runner.process.interrupt import early_signal

if TYPE_CHECKING:
    from runner.observe.logs import Log

ENV = "MIGRATION_ECS_"
LAUNCHER_COMMAND = "ecs run"  # the ecs.summary's command: its metric's Command dimension
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
        description="Run the migration task (Fargate by default), stream its CloudWatch logs to "
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
        default=_flag(environ, "ASSIGN_PUBLIC_IP"),
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
    _placement_options(run, env)
    _override_options(run, env, environ)
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
        "--stop-with-parent",
        action="store_true",
        default=_flag(environ, "STOP_WITH_PARENT"),
        help="stop the task (exit 45) when the process that started the launcher "
        "exits, e.g. killed with SIGKILL by a cancelled `pulumi up`",
    )
    run.add_argument(
        "--parent-pid",
        type=_pid,
        default=env("PARENT_PID"),
        metavar="PID",
        help="with --stop-with-parent, also stop the task when this process exits: the "
        "shell that started a wrapper (`uv run`) which outlives it (infra's gate passes $$)",
    )
    run.add_argument(
        "--command",
        nargs=argparse.REMAINDER,
        default=_command_words(env("COMMAND") or "") or None,
        help="the container's command instead of the task definition's, e.g. "
        "--command downgrade -1 (takes the rest of the line)",
    )
    return parser


def _placement_options(run: argparse.ArgumentParser, env: Any) -> None:
    run.add_argument(
        "--launch-type",
        choices=("FARGATE", "EC2", "EXTERNAL"),
        default=env("LAUNCH_TYPE"),
        help="where the task runs (default FARGATE, or the service's with --network-from-service)",
    )
    run.add_argument(
        "--capacity-provider-strategy",
        type=_strategy,
        default=env("CAPACITY_PROVIDER_STRATEGY"),
        metavar="NAME[:WEIGHT[:BASE]],...",
        help="capacity providers instead of a launch type, e.g. FARGATE_SPOT:1,FARGATE:0:1",
    )
    run.add_argument(
        "--network-from-service",
        default=env("NETWORK_FROM_SERVICE"),
        metavar="SERVICE",
        help="run with this service's network configuration (and "
        "its launch type or capacity providers, unless given)",
    )
    run.add_argument(
        "--platform-version",
        default=env("PLATFORM_VERSION"),
        help="Fargate platform version (default: LATEST)",
    )


def _override_options(run: argparse.ArgumentParser, env: Any, environ: Mapping[str, str]) -> None:
    run.add_argument(
        "--env",
        type=_pair,
        action="append",
        metavar="NAME=VALUE",
        default=_pairs_from(environ, "ENV"),
        help="an environment variable for the container (repeatable), e.g. "
        "--env MIGRATION_ALLOW_DATABASE_AHEAD=true",
    )
    run.add_argument(
        "--cpu",
        type=_size("vcpu"),
        default=env("CPU"),
        help="the task's CPU units, overriding its task definition's (e.g. 1024)",
    )
    run.add_argument(
        "--memory",
        type=_size("gb"),
        default=env("MEMORY"),
        help="the task's memory (MiB), overriding its task definition's",
    )
    run.add_argument(
        "--tag",
        type=_pair,
        action="append",
        metavar="KEY=VALUE",
        default=_pairs_from(environ, "TAGS"),
        help="a tag for the task (repeatable)",
    )
    run.add_argument(
        "--propagate-tags",
        choices=("TASK_DEFINITION", "NONE"),
        default=env("PROPAGATE_TAGS"),
        help="copy the task definition's tags to the task (needs ecs:TagResource)",
    )


#: what a MIGRATION_ECS_* switch may say (any case); anything else is refused, not false
TRUE, FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = (environ.get(ENV + name) or "").strip().lower()
    if value not in TRUE + FALSE:
        raise LaunchUsageError(
            f"{ENV}{name} {value!r}: one of {', '.join(TRUE + FALSE[1:])} (or unset)"
        )
    return value in TRUE


def _pair(text: str) -> tuple[str, str]:
    """``NAME=VALUE``. A wrong item is never quoted: its value may be a secret."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(
            f"an item of {len(text)} characters is not NAME=VALUE (it has no name before "
            "an '='); it is not repeated here, its value may be secret"
        )
    return name.strip(), value


def _size(unit: str) -> Any:
    """A task size as RunTask takes it: a positive whole number (CPU units, MiB), or a
    positive number of ``unit`` (``1 vCPU``, ``2 GB``)."""

    def check(text: str) -> str:
        value = text.strip()
        whole = re.fullmatch(r"0*[1-9][0-9]*", value)
        units = re.fullmatch(rf"([0-9]+(?:\.[0-9]+)?) ?{unit}", value, re.IGNORECASE)
        if not (whole or (units and float(units.group(1)) > 0)):
            raise argparse.ArgumentTypeError(
                f"{text!r}: a positive whole number, or a positive number of {unit}"
            )
        return value

    return check


def _strategy(text: str) -> tuple[tuple[str, int, int], ...]:
    strategy = []
    for item in _ids(text):
        name, *numbers = item.split(":")
        try:
            if not name or len(numbers) > 2:
                raise ValueError(item)
            weight = int(numbers[0]) if numbers else 1
            base = int(numbers[1]) if len(numbers) > 1 else 0
            if not (0 <= weight <= 1000 and 0 <= base <= 100000):
                raise ValueError(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not NAME[:WEIGHT[:BASE]] (WEIGHT 0-1000, BASE 0-100000)"
            ) from None
        strategy.append((name, weight, base))
    return tuple(strategy)


def _pairs_from(environ: Mapping[str, str], name: str) -> list[tuple[str, str]] | None:
    """``NAME=VALUE`` items of a variable, split like a shell would (the command line's
    repeated option adds to them)."""
    try:
        return [_pair(item) for item in shlex.split(environ.get(ENV + name) or "")] or None
    except (argparse.ArgumentTypeError, ValueError) as err:
        raise LaunchUsageError(f"{ENV}{name}: {err}") from None


def _command_words(text: str) -> list[str]:
    """MIGRATION_ECS_COMMAND split as a shell would (an unbalanced quote is a usage error)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise LaunchUsageError(f"{ENV}COMMAND {text!r}: {exc}") from None


def _pid(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > threading.TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a finite number of seconds, more than 0 and at most "
            f"{threading.TIMEOUT_MAX:.0f}"
        )
    return value


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[LaunchRequest, Pacing]:
    """The request and pacing a command line (and the environment) ask for. Raises
    :class:`LaunchUsageError` naming the option and variable to fix (argparse converts and
    checks a default taken from the environment like a value given on the command line)."""
    argv, command = _split_command(argv)
    args = build_parser(environ).parse_args(argv)
    if command is not None:
        args.command = command
    missing = [
        f"--{name.replace('_', '-')} ({ENV}{name.upper()})"
        for name in ("cluster", "task_definition")
        if not getattr(args, name)
    ]
    if missing:
        raise LaunchUsageError("migration-runner ecs run needs " + ", ".join(missing))
    if args.parent_pid is not None and not args.stop_with_parent:
        raise LaunchUsageError(
            f"--parent-pid ({ENV}PARENT_PID) goes with --stop-with-parent ({ENV}STOP_WITH_PARENT)"
        )
    if args.launch_type and args.capacity_provider_strategy:
        raise LaunchUsageError(
            "--launch-type and --capacity-provider-strategy exclude each other: give one"
        )
    _check_values(args, build_parser(environ))
    request = LaunchRequest(
        cluster=args.cluster,
        task_definition=args.task_definition,
        subnets=_ids(args.subnets or ""),
        security_groups=_ids(args.security_groups or ""),
        assign_public_ip=args.assign_public_ip,
        container=args.container,
        image=args.image,
        command=tuple(args.command) if args.command else None,
        timeout_s=args.timeout,
        platform_version=args.platform_version,
        stop_with_parent=args.stop_with_parent,
        parent_pid=args.parent_pid,
        launch_type=args.launch_type,
        capacity_providers=args.capacity_provider_strategy or (),
        network_from_service=args.network_from_service,
        environment=tuple(args.env or ()),
        cpu=args.cpu,
        memory=args.memory,
        tags=tuple(args.tag or ()),
        propagate_tags=args.propagate_tags,
    )
    return request, Pacing(
        first_poll_s=min(1.0, args.poll_interval), max_poll_s=args.poll_interval, drain_s=args.drain
    )


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """The line before ``--command``, and everything after it, as it is: argparse would take
    a ``--`` in it (``upgrade --then -- APP``) for the end of the launcher's own options."""
    argv = list(argv)
    if "--command" not in argv:
        return argv, None
    at = argv.index("--command")
    return argv[:at], argv[at + 1 :]


def _check_values(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """What argparse lets through that no AWS call should see. Raises
    :class:`LaunchUsageError`."""
    if args.command == []:
        raise LaunchUsageError("--command needs the command to run, e.g. --command check")
    for name in ("subnets", "security_groups"):
        if getattr(args, name) is not None and not _ids(getattr(args, name)):
            raise LaunchUsageError(
                f"--{name.replace('_', '-')} ({ENV}{name.upper()}) names no id: "
                "give comma-separated ids"
            )
    for name in (
        "cluster",
        "task_definition",
        "image",
        "container",
        "platform_version",
        "network_from_service",
    ):
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise LaunchUsageError(f"--{name.replace('_', '-')} ({ENV}{name.upper()}) is empty")
    for action in _run_actions(parser):  # argparse checks choices on the line, not on defaults
        value = getattr(args, action.dest, None)
        if action.choices and value is not None and value not in action.choices:
            raise LaunchUsageError(
                f"{action.option_strings[0]} ({ENV}{action.dest.upper()}) {value!r}: "
                f"one of {', '.join(action.choices)}"
            )
    options = {o for action in _run_actions(parser) for o in action.option_strings}
    words = list(args.command or ())
    before_app = words[: words.index("--")] if "--" in words else words  # --then's app is its own
    taken = [word for word in before_app if word.split("=")[0] in options]
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
    logs.configure(
        fmt=environ.get("MIGRATION_LOG_FORMAT") or "auto",
        stream=cast(TextIO, ReaderMayGo(sys.stderr)),
    )
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
        launcher = _launcher(pacing, stop, log, assume_role_args(environ))
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
                f" (the task {task_arn} was started and may still be running: stop it: "
                f"aws ecs stop-task --cluster {task_arn.split('/')[-2]} --task {task_arn})"
            )
        log.error(
            "error",
            error_code=failure.code if failure else "internal",
            message=message,
            exit_code=code,
            **{"task_arn": task_arn, **(failure.fields if failure else {})},
        )
    fields = _summary(result, code, getattr(launcher, "task_arn", None))
    document = emf.with_metrics(
        fields,
        now_s=time.time(),
        metrics=emf.launcher_metrics(fields),
        **metric_dimensions(environ, getattr(launcher, "metric_settings", {})),
    )
    if document["Failures"] and launcher is not None:  # no runner's line counted this run
        launcher.publish(json.dumps({"event": "ecs.summary", **document}, default=str))
    log.info("ecs.summary", **document)
    return code


def metric_dimensions(environ: Mapping[str, str], container: Mapping[str, str]) -> dict[str, Any]:
    """The launcher's metric's namespace and dimensions: the migrating container's
    ``MIGRATION_METRICS_*`` (what infra's alarm watches) when its task definition is known,
    else the launcher's own environment's."""

    def setting(name: str) -> str | None:
        return container.get(f"MIGRATION_METRICS_{name}") or environ.get(
            f"MIGRATION_METRICS_{name}"
        )

    return {
        "namespace": setting("NAMESPACE") or emf.DEFAULT_NAMESPACE,
        "service": setting("SERVICE"),
        "environment": setting("ENVIRONMENT"),
    }


def assume_role_args(environ: Mapping[str, str]) -> dict[str, str] | None:
    """STS AssumeRole arguments when ``MIGRATION_ECS_ROLE_ARN`` asks the launcher to act as
    that role (the deploy's role, as the Pulumi stack's ``aws:assumeRole`` names it), with
    ``MIGRATION_ECS_ROLE_EXTERNAL_ID`` and ``MIGRATION_ECS_ROLE_SESSION_NAME``; else None."""
    role_arn = environ.get(ENV + "ROLE_ARN")
    if not role_arn:
        return None
    args = {
        "RoleArn": role_arn,
        "RoleSessionName": environ.get(ENV + "ROLE_SESSION_NAME") or USER_AGENT,
    }
    if environ.get(ENV + "ROLE_EXTERNAL_ID"):
        args["ExternalId"] = environ[ENV + "ROLE_EXTERNAL_ID"]
    return args


def acting_as(source: Any, assume_role: Mapping[str, Any], config: Any) -> Any:
    """A boto3 session acting as the role ``assume_role`` names (:func:`assume_role_args`),
    its credentials taken with ``source``'s and renewed before they expire: AssumeRole
    grants an hour by default, and a migration (``--timeout``) may run longer."""
    import boto3
    import botocore.session
    from botocore.credentials import (
        AssumeRoleCredentialFetcher,
        CredentialProvider,
        CredentialResolver,
        DeferredRefreshableCredentials,
    )

    args = dict(assume_role)
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=lambda *a, **kw: source.client(*a, config=config, **kw),
        source_credentials=source.get_credentials(),
        role_arn=args.pop("RoleArn"),
        extra_args=args,
    )
    renewed = DeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role"
    )

    class Role(CredentialProvider):  # type: ignore[misc]  # botocore has no type hints
        METHOD = "assume-role"

        def load(self) -> Any:
            return renewed

    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver([Role()]))
    return boto3.session.Session(botocore_session=core, region_name=source.region_name)


class ReaderMayGo:
    """A stream whose reader may go away: the process that started the launcher was killed,
    and with it whoever read the pipe. From the first broken pipe on, writes are dropped, so
    the launcher still stops the task (``--stop-with-parent``) and ends as it should; nobody is
    left to read what it would have said."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.gone = True

    def isatty(self) -> bool:
        return self._stream.isatty()


def _launcher(
    pacing: Pacing, stop: Stop, log: Log, assume_role: dict[str, str] | None = None
) -> Launcher:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise LaunchUsageError(
            "migration-runner ecs needs boto3: install migration-runner[aws]"
        ) from None
    from runner.ecs.logs_tail import render

    config = Config(retries={"mode": "standard", "max_attempts": 8}, user_agent_extra=USER_AGENT)
    session = boto3.session.Session()
    if assume_role is not None:
        session = acting_as(session, assume_role, config)
    tty = sys.stdout.isatty()

    stdout = ReaderMayGo(sys.stdout)

    def out(event: dict[str, Any]) -> None:
        print(render(event.get("message", ""), tty), file=stdout, flush=True)

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
            hint = " (docs/deploying-on-ecs.md lists the IAM actions the launcher needs)"
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
        return {"command": LAUNCHER_COMMAND, "exit_code": code, "task_arn": task_arn}
    outcome = result.outcome
    return {
        "command": LAUNCHER_COMMAND,
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


def _log_result(log: Log, result: LaunchResult) -> None:
    """One ``error`` event for every outcome but success (the summary follows)."""
    outcome = result.outcome
    if result.exit_code == 0:
        return
    if result.stopped_by is not None and result.exit_code in (
        LaunchExit.TIMEOUT,
        LaunchExit.INTERRUPTED,
    ):
        cause = {
            "timeout": "--timeout passed",
            PARENT_EXITED: "the process that started the launcher exited",
        }.get(result.stopped_by, f"{result.stopped_by} received")
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
            message=(
                "--timeout passed before the task ever ran, and StopTask stopped it: "
                if result.stopped_by == "timeout"
                else ""
            )
            + outcome.explanation(),
        )
