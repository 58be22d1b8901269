"""``upgrade --then -- APP...``: splitting the command line and checking the app before
anything is migrated (the hand-over itself is tested with real processes in
test_handoff_process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from runner.cli.then import resolve_app, split_app_command
from runner.errors import ConfigError
from tests.support.helpers import ROOT, command, runner_env


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["upgrade"], (["upgrade"], None)),
        (
            ["upgrade", "--then", "--", "uvicorn", "app:app", "--port", "8000"],
            (["upgrade"], ["uvicorn", "app:app", "--port", "8000"]),
        ),
        (
            ["upgrade", "abc123", "--then", "uvicorn", "app:app"],
            (["upgrade", "abc123"], ["uvicorn", "app:app"]),
        ),
        (["upgrade", "--then", "--", "sh", "-c", "--then"], (["upgrade"], ["sh", "-c", "--then"])),
        (["upgrade", "--then", "--", "app", "--", "x"], (["upgrade"], ["app", "--", "x"])),
        (["upgrade", "--then"], (["upgrade"], [])),
    ],
)
def test_everything_after_then_is_the_apps_command(argv: list[str], expected: tuple) -> None:
    assert split_app_command(argv) == expected


def test_an_app_on_path_resolves_to_its_executable() -> None:
    assert resolve_app(["sh", "-c", "true"]).endswith("/sh")


def test_a_missing_app_is_refused_before_migrating() -> None:
    with pytest.raises(ConfigError, match="'no-such-app-xyz' is not an executable on PATH"):
        resolve_app(["no-such-app-xyz", "--serve"])


def test_then_without_a_command_is_refused() -> None:
    with pytest.raises(ConfigError, match="--then needs the app's command"):
        resolve_app([])


# --- the hand-over, with real runner processes ------------------------------------------

# The app says who it is (same PID as the runner: an exec, not a child) and whether SIGTERM
# reaches it (the runner ignores late signals after its summary: the app must not inherit that).
APP = (
    "import os, signal, sys; print(f'app pid={os.getpid()} "
    "sigterm_default={signal.getsignal(signal.SIGTERM) is signal.SIG_DFL}', flush=True); "
    "sys.exit(7)"
)


def then(env: dict[str, str], *app: str) -> tuple[int, int, list[str], list[dict]]:
    """``upgrade --then -- APP...``: (exit code, the runner's PID, stdout lines, its events)."""
    proc = subprocess.Popen(
        command("upgrade", "--then", "--", *app),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = proc.communicate(timeout=60)
    lines = out.splitlines()
    return proc.returncode, proc.pid, lines, [json.loads(x) for x in lines if x.startswith("{")]


def test_after_a_successful_upgrade_the_runner_becomes_the_app(database, project) -> None:
    project.audited_chain(["t1", "t2"])
    code, pid, lines, events = then(runner_env(database, project), sys.executable, "-c", APP)
    assert code == 7, "\n".join(lines)  # the app's own exit code
    assert [e["event"] for e in events][-2:] == ["app.exec", "summary"]  # the summary last
    assert events[-1]["exit_code"] == 0 and events[-1]["applied"] == ["t1", "t2"]
    assert events[-2]["command"] == [sys.executable, "-c", APP]
    assert lines[-1] == f"app pid={pid} sigterm_default=True"  # same process, signals restored
    assert database.version() == ["t2"]


def test_a_failed_upgrade_never_starts_the_app(database, project) -> None:
    project.revision("t1", None, "op.execute('SELECT * FROM no_such_table')")
    code, _pid, lines, events = then(runner_env(database, project), sys.executable, "-c", APP)
    assert code == 6, "\n".join(lines)
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 6
    assert not any(line.startswith("app ") for line in lines)
    assert "app.exec" not in [e["event"] for e in events]


def test_an_app_that_is_not_there_fails_before_anything_is_migrated(database, project) -> None:
    project.audited_chain(["t1"])
    code, _pid, lines, events = then(runner_env(database, project), "no-such-app-xyz", "serve")
    assert code == 2, "\n".join(lines)
    assert events[-2]["event"] == "error" and "no-such-app-xyz" in events[-2]["message"]
    assert database.version() == []


def test_then_goes_with_upgrade_only(database, project) -> None:
    proc = subprocess.run(
        command("check", "--then", "--", "true"),
        env=runner_env(database, project),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "--then goes with upgrade only" in proc.stdout + proc.stderr


def test_an_app_whose_interpreter_is_missing_is_refused_before_migrating(
    database, project, tmp_path
) -> None:
    """Found by issue 21: the summary said 0, then the exec failed and the run exited 2."""
    app = tmp_path / "serve"
    app.write_text("#!/no/such/python3\nprint('hi')\n")
    app.chmod(0o755)
    project.audited_chain(["t1"])
    code, _pid, lines, events = then(runner_env(database, project), str(app))
    assert code == 2, "\n".join(lines)
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 2
    assert "/no/such/python3" in events[-2]["message"]
    assert database.version() == []


def test_dry_run_never_hands_over(database, project) -> None:
    """Found by issue 21: ``upgrade --dry-run --then`` started the app on an empty database."""
    project.audited_chain(["t1"])
    proc = subprocess.run(
        command("upgrade", "--dry-run", "--then", "--", "true"),
        env=runner_env(database, project),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # a dry run's stdout carries its result: its usage error logs on stderr (attack21 finding 4)
    assert proc.stdout == ""
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 2
    assert any(e["event"] == "error" and "--dry-run" in e["message"] for e in events)
    assert database.version() == []


def test_the_app_starts_with_the_default_signal_dispositions(database, project) -> None:
    """Found by issue 21: the app inherited Python's ignored SIGPIPE (and SIGXFSZ): ``yes |
    head -1`` in it printed "Broken pipe"."""
    project.audited_chain(["t1"])
    code, _pid, lines, _events = then(
        runner_env(database, project),
        "sh",
        "-c",
        "yes | head -1; grep -E '^SigIgn' /proc/self/status",
    )
    assert code == 0, "\n".join(lines)
    assert not any("Broken pipe" in line for line in lines), lines
    ignored = int(lines[-1].split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} ignored in the app"


def test_an_app_that_breaks_during_the_migration_ends_with_one_summary_saying_so(
    database, project, tmp_path
) -> None:
    """Found by attack21: checked before migrating, the app became unrunnable meanwhile (here
    a revision rewrites it): one summary, last, saying the migration was applied and the app
    was not started (before: an ``app.exec``, a summary 0, then an error and a second summary
    with ``applied: []``)."""
    app = tmp_path / "serve"
    app.write_text("#!/bin/sh\necho started\n")
    app.chmod(0o755)
    project.revision("t1", None, f"open({str(app)!r}, 'w').write('echo no shebang now')")
    code, _pid, lines, events = then(runner_env(database, project), str(app))
    assert code == 2, "\n".join(lines)
    assert [e["event"] for e in events].count("summary") == 1, "\n".join(lines)
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 2
    assert events[-1]["outcome"] == "app_not_started" and events[-1]["applied"] == ["t1"]
    assert "migration was applied" in events[-2]["message"]
    assert "app.exec" not in [e["event"] for e in events]
    assert not any("started" == line for line in lines)
    assert database.version() == ["t1"]
