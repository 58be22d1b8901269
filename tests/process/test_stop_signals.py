"""Every stop signal ends a run with its summary: SIGHUP (a CI job's or a terminal's session
going away) as SIGTERM and SIGINT do. Left to its default, SIGHUP killed the runner with no
summary, and ``verify`` left its throwaway PostgreSQL running."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runner.errors import ExitCode
from tests.support.helpers import Running, runner_env, wait_until
from tests.support.verify_helpers import History

#: a revision that holds the walk long enough to be signalled while the server runs
SLOW = 'op.execute("SELECT pg_sleep(30)")'


def _servers_under(root: Path) -> list[int]:
    """The PostgreSQL servers whose data directory is under ``root`` (their pids)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "postgres" in cmdline and f"{root}/" in cmdline and "-D" in cmdline.split("\0"):
            found.append(int(proc.name))
    return found


def _sleeping(root: Path) -> bool:
    """verify's walk is inside the slow revision (asked over the cluster's unix socket)."""
    for pidfile in root.glob("pgcluster-*/data/postmaster.pid"):
        lines = pidfile.read_text().splitlines()
        if len(lines) < 4:
            continue
        try:
            with psycopg.connect(
                host=str(pidfile.parent.parent), port=lines[3], user="postgres", dbname="postgres"
            ) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
                ).fetchone()
                return bool(row and row[0])
        except psycopg.OperationalError:
            return False
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_mid_verify_removes_its_own_server_and_ends_with_the_summary(
    tmp_path: Path, scratch: Path, sig: signal.Signals
) -> None:
    history = History(tmp_path / "project")
    history.add(
        'op.create_table("calls", sa.Column("id", sa.BigInteger, primary_key=True))',
        'op.drop_table("calls")',
    )
    history.add(SLOW)
    proc = Running(runner_env(None, history, TMPDIR=str(scratch)), "verify", "--skip", "lint")
    wait_until(lambda: bool(_servers_under(scratch)), timeout=60, what="verify's own server")
    wait_until(lambda: _sleeping(scratch), timeout=60, what="the slow revision to run")
    proc.signal(sig)
    result = proc.finish(timeout=60)
    result = dataclasses.replace(result, log_stream="stderr")

    assert result.code == ExitCode.INTERRUPTED, result.stderr[-2000:]
    result.check_log_contract()
    assert result.event("error")["signal"] == sig.name
    assert result.stdout == ""
    assert not _servers_under(scratch), "verify's throwaway PostgreSQL is still running"
    assert list(scratch.iterdir()) == []


@pytest.fixture
def scratch() -> Iterator[Path]:
    """verify's TMPDIR; a server a failed run left in it is shut down (SIGQUIT: immediate)."""
    # short: the server's unix socket lives in its directory (sun_path has 108 bytes)
    path = Path(tempfile.mkdtemp(prefix="mr-stop-", dir="/tmp"))
    path.chmod(0o755)  # as root the server runs as postgres, which must reach it
    try:
        yield path
    finally:
        for pid in _servers_under(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not _servers_under(path), timeout=30, what="the server to stop")
        shutil.rmtree(path, ignore_errors=True)
