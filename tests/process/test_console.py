"""The terminal: what a person sees when the runner's output is a TTY (a real pty here),
and the console renderer's lines. JSON on a non-TTY is covered everywhere else."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from enum import IntEnum

from runner.observe.console import Console, backfill_bar, progress
from tests.support.helpers import ROOT, command, run, runner_env, wait_until

RED = "\x1b[31m"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> list[str]:
    return ANSI.sub("", text).splitlines()


def run_on_a_terminal(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run the runner with stdout and stderr on one pty, as in a person's terminal."""
    env = {**env, "TERM": "xterm"}
    env.pop("MIGRATION_LOG_FORMAT", None)  # auto: the runner decides from the TTY
    env.pop("NO_COLOR", None)
    main, child = pty.openpty()
    proc = subprocess.Popen(
        command(*args),
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        close_fds=True,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: every writer closed the pty
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(main)
    code = proc.wait(timeout=10)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def test_read_commands_on_a_terminal_print_only_their_result(database, project):
    project.audited_chain(["a1", "a2", "a3"])
    env = runner_env(database, project)
    assert run(env, "upgrade", "a2").code == 0
    code, out = run_on_a_terminal(env, "current")
    assert code == 0
    assert out.splitlines() == ["a2", "1 pending: a3 (expand)"]
    code, verbose = run_on_a_terminal(env, "-v", "current")
    lines = plain(verbose)
    assert code == 0 and "a2" in lines and lines[-1].startswith("current: behind, at a2, in ")
    assert any(line.startswith("info    start ") and "settings=" in line for line in lines)
    assert not any(line.startswith("{") for line in lines)  # console lines, not JSON
    assert "ExitCode" not in verbose and "<" not in verbose  # enums as values


def test_upgrade_on_a_terminal_shows_progress_and_no_settings(database, project):
    project.audited_chain(["a1", "a2", "a3"])
    code, out = run_on_a_terminal(runner_env(database, project), "upgrade")
    assert code == 0, out
    lines = plain(out)
    assert "upgrade: 3 revisions, base -> a3" in lines, out
    for n, rev in enumerate(["a1", "a2", "a3"], start=1):
        assert any(
            line.startswith(f"{n}/3 ") and rev in line and line.endswith(" s") for line in lines
        ), out
    assert "settings" not in out and "alembic_config" not in out
    assert not any(line.startswith("{") for line in lines)
    assert "migrated" in lines[-1] and "exit 0" in lines[-1]


def test_an_error_on_a_terminal_is_one_red_line_saying_what_to_do(project):
    env = runner_env(None, project, DATABASE_URL="mysql://u:secret@h/d")
    code, out = run_on_a_terminal(env, "current")
    assert code == 2
    errors = [line for line in out.splitlines() if "error" in line]
    assert len(errors) == 1, out
    assert errors[0].startswith(RED + "error: DATABASE_URL must start with postgresql://")
    assert "(exit 2)" in errors[0] and "secret" not in out


def test_console_lines():
    console = Console(colors=False)
    assert (
        console(
            None,
            "",
            {
                "event": "upgrade.plan",
                "level": "info",
                "from_revision": [],
                "target": ["c"],
                "pending": ["a", "b", "c"],
            },
        )
        == "upgrade: 3 revisions, base -> c"
    )
    started = console(
        None,
        "",
        {"event": "revision.started", "level": "info", "revision": "a", "message": "create users"},
    )
    assert started.startswith("1/3 a create users  ") and started.endswith(" s")
    assert (
        console(None, "", {"event": "error", "level": "error", "message": "fix X", "exit_code": 2})
        == "error: fix X (exit 2)"
    )

    class Code(IntEnum):
        OK = 0

    line = console(
        None, "", {"event": "start", "level": "info", "code": Code.OK, "settings": {"db_host": "h"}}
    )
    assert line == "info    start code=0"
    assert "settings" in Console(colors=False, verbose=True)(
        None, "", {"event": "start", "level": "debug", "settings": {"a": 1}}
    )


def test_progress_becomes_a_bar_for_many_revisions():
    assert progress(2, 5) == "2/5"
    assert progress(5, 20) == "[#####---------------] 5/20"


def test_a_long_revision_shows_one_live_progress_line_on_a_terminal(database, project):
    """A revision waits on a lock for a few seconds: its progress line is rewritten in place
    (cursor up, erase) each second, then the revision's done line follows."""
    import threading

    from runner.observe.console import REWRITE

    with database.connect() as conn:
        conn.execute("CREATE TABLE calls (id bigserial PRIMARY KEY)")
    path = project.revision("r1", None, 'op.execute("ALTER TABLE calls ADD COLUMN note text")')
    path.write_text(path.read_text() + '\nmigration_runner = {"lock_timeout": 0}\n')
    blocker = database.connect(application_name="app-report")
    blocker.autocommit = False
    blocker.execute("SELECT count(*) FROM calls").fetchone()

    def waited_long_enough() -> bool:  # three progress intervals, then the blocker ends
        return bool(
            database.query(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'ALTER TABLE calls%%' AND now() - query_start > '3.5 s'"
            )[0][0]
        )

    def release() -> None:
        wait_until(waited_long_enough, timeout=60, what="the ALTER waiting 3.5 s")
        blocker.commit()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        code, out = run_on_a_terminal(
            runner_env(database, project, MIGRATION_PROGRESS_INTERVAL=1), "upgrade"
        )
    finally:
        releaser.join(timeout=60)
        blocker.close()
    assert code == 0, out
    progress = [line for line in plain(out) if "waiting on Lock (relation)" in line]
    assert len(progress) >= 3, out
    assert all("blocked by pid" in line and "app-report" in line for line in progress), out
    assert out.count(REWRITE) == len(progress) - 1, out  # each after the first replaces one
    done = plain(out).index(next(line for line in plain(out) if line.startswith("  done r1")))
    assert "waiting on Lock" in plain(out)[done - 1]  # the last progress line stays above it


def test_a_backfill_shows_a_bar_with_rows_rate_and_eta():
    event = {"table": "calls", "rows_done": 300_000, "rows_left_estimate": 700_000}
    assert (
        backfill_bar({**event, "rows_per_s": 41_000, "eta_s": 17.1})
        == "backfill calls [######--------------] 30% 300,000 rows, 41,000/s, ETA 17 s"
    )
    assert backfill_bar({**event, "rows_per_s": 41_000, "finished": True}).endswith(
        "[####################] 100% 300,000 rows, 41,000/s, done"
    )
    unknown = {"table": "calls", "rows_done": 300_000, "rows_left_estimate": None}
    assert backfill_bar({**unknown, "rows_per_s": 41_000, "eta_s": None}) == (
        "backfill calls 300,000 rows (total unknown), 41,000/s"
    )
