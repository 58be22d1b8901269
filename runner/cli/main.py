"""The command line: parse, set up logging and signals, call one verb, and map its
:class:`~runner.outcome.Result` (or error) to an exit code. Every failure becomes one
``error`` event; every run ends with one ``summary`` event. Writing verbs log to stdout
(what ECS ships to CloudWatch); verbs that print a result (``current``, ``history``,
``sql`` ...) print it on stdout and log to stderr.

Adding a subcommand: a function ``(args, settings, facts, interrupt, log) -> Result`` and
one :class:`Command` in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from runner import __version__
from runner.cli import then as handoff
from runner.cli.arguments import CHECKLIST, dry_run_flag, lint_flag, phase_flag
from runner.cli.report import SUMMARY_ONCE, exit_now, log_error, metric_dimensions, report, summary
from runner.errors import (
    AppNotStarted,
    ConfigError,
    ExitCode,
    Interrupted,
    OutputClosed,
    RunnerError,
    UsageError,
)
from runner.lock.advisory import lock_key
from runner.observe import cloudwatch_metrics as emf
from runner.observe import ecs_metadata, logs
from runner.observe.redact import redact_text, spellings
from runner.outcome import Facts, Outcome, Result
from runner.process.interrupt import Interrupt, ignore_late_signals

if TYPE_CHECKING:
    from runner.observe.logs import Log

Verb = Callable[[argparse.Namespace, Any, Any, Interrupt, Any], Result]
Arguments = Callable[[argparse.ArgumentParser], None]


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line like any other failure (an error event and a summary)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see migration-runner --help)")


@dataclasses.dataclass(frozen=True)
class LazyVerb:
    """The verb at ``path`` (``"runner.package.module:function"``), called with the settings,
    the arguments ``names`` from the command line, and (as asked) the run's facts and
    interrupt. Its module is imported only when the verb runs, so a run imports what it needs
    and no more; a unit test resolves every path in :data:`COMMANDS`."""

    path: str
    names: tuple[str, ...] = ()
    facts: bool = False
    interrupt: bool = False

    def resolve(self) -> Callable[..., Result]:
        import importlib

        module, _, function = self.path.partition(":")
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]

    def __call__(
        self,
        args: argparse.Namespace,
        settings: Any,
        run_facts: Any,
        run_interrupt: Interrupt,
        log: Log,
    ) -> Result:
        kwargs: dict[str, Any] = {"log": log}
        if self.facts:
            kwargs["facts"] = run_facts
        if self.interrupt:
            kwargs["interrupt"] = run_interrupt
        return self.resolve()(settings, *(getattr(args, n) for n in self.names), **kwargs)


def lazy(path: str, *names: str, facts: bool = False, interrupt: bool = False) -> LazyVerb:
    return LazyVerb(path, names, facts, interrupt)


def _target(help_text: str, *, optional: bool = False) -> Arguments:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("target", nargs="?" if optional else None, help=help_text)

    return add


def _span(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "span", nargs="?", default="head", help="[FROM:]TO (default: head, from an empty database)"
    )


def _message(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--message", required=True)


def _revision_arguments(p: argparse.ArgumentParser) -> None:
    _message(p)
    p.add_argument(
        "--autogenerate",
        action="store_true",
        help="diff the models against the database (needs its settings)",
    )


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Verb
    arguments: Arguments = lambda _p: None
    #: logs go to stdout (the run's record); else stderr, and the result to stdout
    writes: bool = False
    #: prints a result; on a terminal, nothing else at the default level
    reads: bool = False
    json_flag: bool = False


def _upgrade(
    args: argparse.Namespace, settings: Any, facts: Any, interrupt: Interrupt, log: Log
) -> Result:
    from runner.commands import migrate as commands

    if args.dry_run:  # only then the checklist (lint, verify, the scratch server): not on a no-op
        from runner.commands import checklist

        return checklist.dry_run(
            settings,
            args.target or settings.migration_target,
            args.phase or settings.migration_phase,
            facts=facts,
            log=log,
        )
    return commands.upgrade(
        settings,
        args.target or settings.migration_target,
        args.phase or settings.migration_phase,
        facts=facts,
        interrupt=interrupt,
        log=log,
    )


COMMANDS = (
    Command(
        "upgrade",
        "apply pending migrations (pnpm db:migrate; --then -- APP: exec APP after)",
        _upgrade,
        phase_flag(
            dry_run_flag(
                _target(
                    "revision (default: MIGRATION_TARGET, which defaults to head)", optional=True
                )
            ),
            "expand: only the revisions safe before the new code is live; contract: the "
            "rest (default: MIGRATION_PHASE, else every pending revision)",
        ),
        writes=True,
        json_flag=True,
    ),
    Command(
        "downgrade",
        "roll back, under the lock (pnpm db:migrate:down)",
        lazy("runner.commands.migrate:downgrade", "target", facts=True, interrupt=True),
        _target("-1 (one step), -N, a revision id, or base: required, never implied"),
        writes=True,
    ),
    Command(
        "stamp",
        "set the version without running migrations, under the lock",
        lazy("runner.commands.migrate:stamp", "target", facts=True, interrupt=True),
        _target("a revision id, head, or base"),
        writes=True,
    ),
    Command(
        "current",
        "the database's revision and whether it is at head (pnpm db:status)",
        lazy("runner.commands.status:current", facts=True),
        reads=True,
        json_flag=True,
    ),
    Command(
        "check",
        "exit 0 only if the database is exactly at head (CI gate, readiness)",
        lazy("runner.commands.checklist:check_at_head", "lint", "phase", facts=True),
        phase_flag(lint_flag, "exit 0 when only contract revisions are pending (expand)"),
        reads=True,
        json_flag=True,
    ),
    Command(
        "history",
        "the migration timeline, marking what is applied (pnpm db:history)",
        lazy("runner.commands.status:history", facts=True),
        reads=True,
        json_flag=True,
    ),
    Command(
        "heads",
        "the scripts' heads; an error if more than one",
        lazy("runner.commands.status:heads"),
        reads=True,
        json_flag=True,
    ),
    Command(
        "manifest",
        "write the scripts' manifest (at image build time: makes no-op runs fast)",
        lazy("runner.commands.authoring:write_manifest"),
        json_flag=True,
    ),
    Command(
        "sql",
        "print the SQL an upgrade would run, without connecting",
        lazy("runner.commands.authoring:sql", "span"),
        _span,
    ),
    Command(
        "merge",
        "write a revision merging every head",
        lazy("runner.commands.authoring:merge", "message"),
        _message,
    ),
    Command(
        "revision",
        "write a new revision file (pnpm db:migrate:create)",
        lazy("runner.commands.authoring:revision", "message", "autogenerate", facts=True),
        _revision_arguments,
    ),
    *(
        Command(
            name,
            help_text,
            lazy(f"runner.commands.checklist:{name}", *names),
            arguments,
            reads=True,
            json_flag=True,
        )
        for name, (help_text, names, arguments) in CHECKLIST.items()
    ),
)
BY_NAME = {command.name: command for command in COMMANDS}
#: ``check``'s verdicts; any other command exits 0 unless it raised or failed as below
CHECK_EXIT = {
    Outcome.AT_HEAD: ExitCode.OK,
    Outcome.CONTRACT_PENDING: ExitCode.OK,
    Outcome.BEHIND: ExitCode.NOT_AT_HEAD,
    Outcome.EMPTY: ExitCode.NOT_AT_HEAD,
    Outcome.AHEAD: ExitCode.DATABASE_AHEAD,
}
FAILED_EXIT = {
    Outcome.SEVERAL_HEADS: ExitCode.SCRIPTS_INVALID,
    Outcome.CHECKS_FAILED: ExitCode.VERIFY_FAILED,
    Outcome.LINT_ERRORS: ExitCode.LINT_FAILED,
}


def exit_code(command: str, outcome: Outcome) -> ExitCode:
    """The exit code of a run of ``command`` that ended with ``outcome`` (no error)."""
    if outcome in FAILED_EXIT:
        return FAILED_EXIT[outcome]
    if command == "check":
        return CHECK_EXIT.get(outcome, ExitCode.OK)
    if command == "upgrade" and outcome == Outcome.AHEAD:  # --dry-run: the upgrade would refuse
        return ExitCode.DATABASE_AHEAD
    return ExitCode.OK


def build_parser(words: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line's parser. When ``words`` start with a command's name, only that
    command's subparser is built: it parses those words exactly as the full parser would
    (global options go before the command, so none can follow it), without building the
    others (argparse looks up a translation for every string it formats: building them all
    was about a quarter of a no-op's time after its imports). Anything else (``-v upgrade``, ``--help``, a typo)
    gets the full parser, its help and its error messages."""
    chosen = [BY_NAME[words[0]]] if words[:1] and words[0] in BY_NAME else None
    parser = _Parser(
        prog="migration-runner",
        description="Apply Alembic migrations to PostgreSQL safely (see README for settings).",
    )
    parser.add_argument("--version", action="version", version=f"migration-runner {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log everything (as MIGRATION_LOG_LEVEL=debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in chosen or COMMANDS:
        parsed = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(parsed)
        if command.json_flag:
            parsed.add_argument("--json", action="store_true", help="print one JSON document")
    if chosen:
        return parser
    sub.add_parser(
        "ecs", help="ecs run: run the migration as a one-off ECS task and wait for it ([aws] extra)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    closed = _stdout_closed()
    if sys.stderr is None:  # started with stderr closed: its diagnostics go nowhere
        sys.stderr = open(os.devnull, "w")
    if words[:1] == ["ecs"]:  # the ECS launcher (runner/ecs): no database settings needed
        from runner.ecs.cli import main as ecs_main

        if closed:  # the container's log lines have nowhere to go; its own events do
            sys.stdout = open(os.devnull, "w")
        return ecs_main(words[1:])
    parser = build_parser(handoff.split_app_command(words)[0])
    try:
        args, app = handoff.parse_command_line(parser, words)
    except UsageError as err:
        return _refuse(err, "usage", parser, log_stream(handoff.split_app_command(words)[0]))
    if closed:
        return _refuse(
            OutputClosed(
                "stdout is closed: nothing could read the run's output, so nothing was run. "
                "Start it with stdout open (> /dev/null to discard it)"
            ),
            args.command,
        )
    facts = Facts()
    code = run_command(args, app, facts)
    return handoff.then(app, code, lambda _log, err: _exec_failed(facts, err))


def _stdout_closed() -> bool:
    """stdout is closed (fd 1 was not open when the process started)."""
    if sys.stdout is None:
        return True
    try:
        os.fstat(sys.stdout.fileno())
    except OSError:
        return True
    except (ValueError, AttributeError, io.UnsupportedOperation):  # in-process: not a file
        return False
    return False


def log_stream(words: Sequence[str]) -> Any:
    """Where the log goes for the command line ``words``, decided from the command's name
    alone (the rest may not parse): stdout for a writing verb (without ``--dry-run``), else
    stderr, where a command that prints a result keeps its log even when refused."""
    name = next((word for word in words if not word.startswith("-")), None)
    command = BY_NAME.get(name or "")
    if command is not None and (not command.writes or "--dry-run" in words):
        return sys.stderr
    return sys.stdout


def _refuse(
    err: RunnerError,
    command: str,
    parser: argparse.ArgumentParser | None = None,
    stream: Any = None,
) -> int:
    """A run refused before anything ran: the error and the summary (on ``stream``, by
    default stdout, unless that is what is closed)."""
    from runner.config.settings import environment_secrets

    if parser is not None:
        parser.print_usage(sys.stderr)
    logs.configure(
        secrets=environment_secrets(),
        stream=sys.stderr if isinstance(err, OutputClosed) else stream or sys.stdout,
    )
    report(err, command, Outcome.FAILED, Facts())
    return int(err.exit_code)


def _exec_failed(facts: Facts, err: RunnerError) -> None:
    """``--then``'s exec failed after the summary, though :func:`handoff.ready` passed just
    before it (the file changed since, or the kernel refused what no check foresees: a
    binary its loader refuses, no memory): say so, with a summary that is true, again last."""
    report(
        AppNotStarted(f"{err.message}; {APPLIED_NOT_STARTED}"),
        "upgrade",
        Outcome.APP_NOT_STARTED,
        facts,
    )


#: what an app that cannot start after the migration leaves behind
APPLIED_NOT_STARTED = (
    "the migration was applied, the app was not started (once it is fixed, a new run has "
    "nothing to migrate and starts it)"
)


def _ready_after_migrating(app: Sequence[str]) -> None:
    """``--then``: checked again before the summary, as late as can be: the summary says
    whether the app can start. Raises :class:`AppNotStarted`."""
    try:
        handoff.ready(app)
    except ConfigError as err:
        raise AppNotStarted(f"{err.message}; {APPLIED_NOT_STARTED}") from None


def run_command(
    args: argparse.Namespace, app: Sequence[str] | None = None, facts: Facts | None = None
) -> int:
    """Run one verb: the only place a result or an error becomes an exit code. ``facts``:
    what the run learns (filled in place: ``--then``'s report after a failed exec)."""
    from runner.config.settings import environment_secrets

    command = BY_NAME[args.command]
    stream = sys.stdout if command.writes and not getattr(args, "dry_run", False) else sys.stderr
    logs.configure(
        level=_level(command, "info", args.verbose, stream),
        secrets=environment_secrets(),
        stream=stream,
    )
    facts = Facts() if facts is None else facts
    outcome, code, settings = Outcome.FAILED, ExitCode.INTERNAL, None
    interrupt = Interrupt(
        on_stuck=lambda: _end_stuck(command.name, facts, interrupt),
        output_failure=lambda: logs.failures[0] if logs.failures else None,
    )
    log = logs.get()
    try:
        interrupt.install()
        interrupt.check()  # a signal during start-up: stop now, with a summary
        settings, log = _configured(command, args, stream)
        result = _run_verb(command, args, settings, facts, interrupt, log)
        outcome, code = result.outcome, exit_code(command.name, result.outcome)
        if app is not None and code == ExitCode.OK:
            _ready_after_migrating(app)  # the app must start once the summary says 0
            log.info("app.exec", command=list(app))
    except RunnerError as err:
        code = err.exit_code
        outcome = _outcome_of(err)
        log_error(log, err)
    except BaseException as err:  # a bug (or sys.exit()): one event, traceback at debug only
        code = ExitCode.INTERNAL
        log.error(
            "error",
            error_code="internal",
            exit_code=int(ExitCode.INTERNAL),
            message=f"unexpected {type(err).__name__}: {err}; please report this "
            "(MIGRATION_LOG_LEVEL=debug shows the traceback)",
            exc_info=True,
        )
    finally:
        with interrupt.deferred(), SUMMARY_ONCE:
            log.info(
                "summary",
                **emf.with_metrics(
                    summary(command.name, outcome, facts, code),
                    now_s=time.time(),
                    **metric_dimensions(settings),
                ),
            )
            with contextlib.suppress(OSError, ValueError):  # stdout's reader gone: said above
                stream.flush()
            ignore_late_signals()
    return int(code)


def _outcome_of(err: RunnerError) -> Outcome:
    if isinstance(err, Interrupted):
        return Outcome.INTERRUPTED
    return Outcome.APP_NOT_STARTED if isinstance(err, AppNotStarted) else Outcome.FAILED


def _argument_secrets(args: argparse.Namespace) -> list[str]:
    """The secrets given on the command line (``verify --database-url``'s password)."""
    from urllib.parse import unquote, urlsplit

    url = getattr(args, "database_url", None)
    try:
        password = urlsplit(url).password if url else None
    except ValueError:  # not a URL: the settings' checks say so
        password = None
    return [
        s for p in ([url, password, unquote(password)] if password else []) for s in spellings(p)
    ]


def _configured(command: Command, args: argparse.Namespace, stream: Any) -> tuple[Any, Any]:
    """The settings, the logs configured by them, and the ``start`` event."""
    from runner.config.settings import load_settings

    settings = load_settings()
    level = _level(
        command, settings.migration_log_level, args.verbose, stream, settings.migration_log_format
    )
    logs.configure(
        settings.migration_log_format,
        level,
        [*settings.secrets(), *_argument_secrets(args)],
        stream,
        ecs_metadata.log_fields(settings.ecs_container_metadata_uri_v4, logs.get()),
    )
    log = logs.get()
    log.info(
        "start",
        version=__version__,
        command=command.name,
        lock_key=lock_key(settings.lock_name()),
        settings=settings.redacted(),
    )
    return settings, log


def _run_verb(
    command: Command,
    args: argparse.Namespace,
    settings: Any,
    facts: Facts,
    interrupt: Interrupt,
    log: Log,
) -> Result:
    """The verb, whatever the project prints meanwhile (a revision at import, env.py)
    turned into ``revision.output`` events; then its result on stdout."""
    from runner.execution.output_capture import OutputCapture

    with OutputCapture(log, lambda: None).active():
        result = command.run(args, settings, facts, interrupt, log)
    lines = []
    if result.document is not None:
        lines.append(
            json.dumps(result.document, indent=2, default=str)
            if getattr(args, "json", False)
            else result.text
        )
    if result.annotations and os.environ.get("GITHUB_ACTIONS") == "true":  # on the PR's diff
        if getattr(args, "json", False):
            print(*result.annotations, sep="\n", file=sys.stderr)
        else:
            lines.extend(result.annotations)
    secrets = [*settings.secrets(), *_argument_secrets(args)]
    try:
        if lines:
            print(*(redact_text(line, secrets) for line in lines), sep="\n", flush=True)
    except (OSError, ValueError) as exc:  # the reader went away (| head -1), a full device
        logs.failures.append(("stdout", exc))
        interrupt.signal_name = interrupt.signal_name or "SIGPIPE"
        raise interrupt.error() from None
    return result


def _end_stuck(command: str, facts: Any, interrupt: Interrupt) -> None:
    """The last resort after a signal (:mod:`runner.process.interrupt`): report, and exit at
    once with the error's code (130, or 141 when SIGPIPE stood for an output that cannot be
    written): the one error decides both the summary's exit code and the process's."""
    if SUMMARY_ONCE.acquire(blocking=False):  # else the run is ending by itself
        err = interrupt.stuck_error()
        report(err, command, Outcome.INTERRUPTED, facts)
        exit_now(int(err.exit_code))


def _level(command: Command, level: str, verbose: bool, stream: Any, fmt: str = "auto") -> str:
    """The log level in effect: debug with ``-v``; on a terminal, a read command at the
    default level shows only warnings and errors (its result is what a person asked for)."""
    if verbose:
        return "debug"
    if command.reads and level == "info" and logs.resolve_format(fmt, stream) == "console":
        return "warning"
    return level


def entry() -> NoReturn:
    """Run the command line for the process (see :mod:`runner.cli.start`), then end
    without Python's interpreter teardown, which finalises some 500 imported modules (tens
    of ms on every deploy) and has nothing left to do: every connection is closed and every
    stream is flushed here. ``main`` stays an ordinary function for callers in-process."""
    exit_now(main())


if __name__ == "__main__":
    entry()
