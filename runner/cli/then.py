"""``migration-runner upgrade --then -- APP...``: migrate, then become the app.

The team's guide starts containers with ``alembic upgrade head && uvicorn ...``, which races
when several containers start at once. Here the upgrade runs under the migration lock like
any other, and only on success the runner replaces itself with the app (``execvp``: same
PID, so under ECS the app is PID 1 and receives ECS's SIGTERM itself). On any failure the
runner exits with its own code and the app never starts.

Contract:
- :func:`split_app_command` is pure: the command line in, the runner's part and the app's
  command out (``None`` without ``--then``).
- :func:`parse_command_line` checks before anything runs that the app can be started.
- :func:`ready` (at parse time, and again just before the summary, which is preceded by one
  ``app.exec`` event): the app and its ``#!`` interpreter can be executed.
- :func:`then`, after the run: the run's exit code unless it succeeded and there is an app;
  else :func:`exec_app`, which restores the default signal dispositions (an ignored signal
  would stay ignored across exec: ``yes | head -1`` in the app would print "Broken pipe")
  and does not return unless the exec itself fails (then ``report`` says so, exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runner.cli import execve
from runner.errors import ConfigError, ExitCode
from runner.observe import logs
from runner.process.interrupt import STOPPING

if TYPE_CHECKING:
    from runner.observe.logs import Log

THEN = "--then"


def split_app_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """``[..., "--then", "--", "app", ...]`` → (the runner's arguments, the app's command).
    The ``--`` is optional; everything after ``--then`` belongs to the app."""
    args = list(argv)
    if THEN not in args:
        return args, None
    at = args.index(THEN)
    app = args[at + 1 :]
    if app[:1] == ["--"]:
        app = app[1:]
    return args[:at], app


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.Namespace, list[str] | None]:
    """The runner's arguments, parsed, and ``--then``'s app command (None without it),
    checked before anything runs: ``--then`` goes with ``upgrade`` only, and its app must be
    found. Every problem goes to ``parser.error`` (the CLI's usage error, exit 2)."""
    runner_args, app = split_app_command(argv)
    args = parser.parse_args(runner_args)
    if app is not None and args.command != "upgrade":
        parser.error("--then goes with upgrade only: upgrade --then -- APP [ARGS...]")
    if app is not None and getattr(args, "dry_run", False):
        parser.error("--then hands over a migrated database: it does not go with --dry-run")
    if app is not None:
        try:
            ready(app)
        except ConfigError as err:
            parser.error(err.message)
    return args, app


def resolve_app(app: Sequence[str]) -> str:
    """The executable the app command names. Raises :class:`ConfigError` when there is no
    command or it cannot be found: better said before migrating than after."""
    if not app:
        raise ConfigError(
            "--then needs the app's command: migration-runner upgrade --then -- uvicorn app:app ..."
        )
    found = shutil.which(app[0])
    if found is None:
        raise ConfigError(f"--then: the app command {app[0]!r} is not an executable on PATH")
    return found


def ready(app: Sequence[str]) -> str:
    """:func:`resolve_app`, and what ``execve`` will need (read the kernel's way, see
    :mod:`runner.cli.execve`): a regular file the runner may execute, on a file system not
    mounted ``noexec``, that is an ELF binary for this machine (with its loader) or starts
    with a ``#!`` line naming an interpreter that passes the same checks (``/usr/bin/env``:
    the program it will look for is on PATH). Else the exec would fail after the run said
    it succeeded."""
    found = resolve_app(app)
    _require_loadable(found, f"the app {found}", found)
    return found


def _require_loadable(path: str, what: str, app: str, depth: int = 0) -> None:
    """``path`` (the app, or the interpreter of its ``#!`` line, ``depth`` levels down) can
    be executed: raises :class:`ConfigError` naming ``what`` when it cannot."""
    _require_executable(path, what)
    head = _read(path, execve.BUF_SIZE, what)
    if not head.startswith((b"#!", execve.ELF)) and not _other_formats():
        problem = "is empty" if not head else "has no #! line and is not an ELF binary"
        raise ConfigError(
            f"--then: {what} {problem}: the kernel cannot execute it. Give it a #! line "
            f"(e.g. #!/bin/sh), or name its interpreter: --then -- sh {app}"
        )
    try:
        if head.startswith(b"#!"):
            _require_interpreter(path, head, app, depth)
        elif head.startswith(execve.ELF):
            _require_elf(path, what)
    except execve.Refused as refused:
        raise ConfigError(f"--then: {what}: {refused}") from None


def _require_interpreter(path: str, head: bytes, app: str, depth: int) -> None:
    """The interpreter the ``#!`` line of ``path`` names can be executed, and so can the
    program ``/usr/bin/env`` will look for."""
    interpreter, argument = execve.shebang(head)
    if depth >= execve.MAX_NESTING:
        raise execve.Refused("its #! interpreters nest deeper than the kernel follows")
    _require_loadable(
        interpreter, f"{path} runs {interpreter!r} (its #! line), which", app, depth + 1
    )
    if os.path.basename(interpreter) != "env":
        return
    program = execve.env_program(argument)
    if program is not None and shutil.which(program) is None:
        raise execve.Refused(f"its #! line runs {program!r} through env: not on PATH")


def _require_elf(path: str, what: str) -> None:
    """The kernel will load the ELF binary ``path``, and its loader (``PT_INTERP``)."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
            size = os.fstat(file.fileno()).st_size
            this = None if _other_formats() else _this_machine()  # binfmt_misc: qemu may run it
            problem = execve.elf_refusal(head, size, this)
            elf = execve.elf_header(head)
            if problem is not None or elf is None:
                raise execve.Refused(problem or "its ELF header is invalid")
            file.seek(elf.phoff)
            at = execve.elf_interpreter(elf, file.read(elf.phnum * elf.phentsize))
            if at is None:
                return  # a static binary
            file.seek(at[0])
            loader = file.read(min(at[1], 4096)).split(b"\0", 1)[0]
    except OSError as exc:
        raise ConfigError(f"--then: cannot read {what}: {exc.strerror}") from None
    name = os.fsdecode(loader)
    if not name or not os.path.isfile(name) or not os.access(name, os.X_OK):
        raise execve.Refused(f"its ELF loader {name!r} (PT_INTERP) is not an executable file here")


@functools.cache
def _this_machine() -> execve.Elf | None:
    """The ELF header of the binary this process runs: the class, byte order and machine
    the kernel loads (``None`` when it cannot be read)."""
    for own in ("/proc/self/exe", sys.executable):
        with contextlib.suppress(OSError):
            with open(own, "rb") as file:
                return execve.elf_header(file.read(64))
    return None


def _read(path: str, size: int, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except OSError as exc:
        raise ConfigError(f"--then: cannot read {what}: {exc.strerror}") from None


def _require_executable(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"--then: {what} is not a file that can be executed")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"--then: {what} is not executable (chmod +x)")
    with contextlib.suppress(OSError):
        if os.statvfs(path).f_flag & os.ST_NOEXEC:
            raise ConfigError(f"--then: {what} is on a file system mounted noexec")


def _other_formats() -> bool:
    """Whether binfmt_misc has formats registered (then the kernel may run other files)."""
    try:
        entries = os.listdir("/proc/sys/fs/binfmt_misc")
    except OSError:
        return False
    return any(e not in ("register", "status") for e in entries)


def then(app: Sequence[str] | None, code: int, report: Callable[[Any, ConfigError], None]) -> int:
    """After the run that exited ``code``: that code, unless the run succeeded and ``--then``
    gave an app, which then replaces this process. Returns only if the exec failed, after
    ``report`` logged why (the CLI's one ``error`` event): exit 2."""
    if app is None or code != ExitCode.OK:
        return code  # a failed upgrade never starts the app
    log = logs.get()
    failed = exec_app(app, log)
    report(log, failed)
    return int(failed.exit_code)


def exec_app(app: Sequence[str], log: Log) -> ConfigError:
    """Replace this process with the app (the ``app.exec`` event is the run's, logged
    before its summary). Returns only if that failed: what to report."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    for sig in (*STOPPING, signal.SIGXFSZ):  # as if the app were started directly
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(app[0], list(app))
    except OSError as exc:
        return ConfigError(f"--then: cannot start the app {app[0]!r}: {exc.strerror}")
