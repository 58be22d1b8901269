"""One checker for the promises every command makes under every fault (issue 21; the list
is in docs/promises.md): it reads a finished run — exit code, stdout, stderr — and the
database the run used, and returns every promise the run broke, as sentences.

It knows nothing of the fault that was injected beyond what the run's :class:`Observed`
says (which streams the test took away, which signal it sent), so that one function judges
every cell of the harness's matrix (tests/process/test_invariants.py) and any other run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from runner.ecs.errors import LaunchExit
from runner.errors import ExitCode
from tests.support.helpers import PASSWORD, Database

#: every exit code a user can look up (the runner's, the launcher's)
DOCUMENTED = {int(c) for c in ExitCode} | {int(c) for c in LaunchExit} - {1}
#: codes that are a command's verdict (``check``, ``verify``, ``lint``, ``heads``), with no
#: error event
VERDICTS = {7, 8, 11, 20, 21}
#: the marker a revision prints (with the DATABASE_URL) when a test asks it to
PRINTED = "PRINTED-BY-REVISION"


@dataclasses.dataclass
class Observed:
    """What a run left behind, and what the test did to it."""

    command: str  # the harness's name for the command (``upgrade``, ``check --lint`` ...)
    code: int | None  # None: the process did not end within the harness's bound
    stdout: str
    stderr: str
    #: where the run's JSON events go: stdout for writers, stderr for the others
    log_stream: str
    #: the run prints one JSON document on stdout (``--json``)
    json_document: bool = False
    #: the test closed stdout or its reader went away: nothing is owed on stdout
    stdout_lost: bool = False
    #: the signal the test sent (after which the run must stop, report, roll back)
    signal: str | None = None
    #: the chain of the test project, oldest first; revision ``r`` creates table ``t_<r>``
    chain: tuple[str, ...] = ()
    summary_event: str = "summary"


def events_in(text: str) -> list[dict[str, Any]]:
    """The JSON events in ``text`` (lines that parse as objects with an ``event``)."""
    found = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "event" in item:
            found.append(item)
    return found


def secret_spellings(secrets: Iterable[str]) -> set[str]:
    return {s for secret in secrets for s in (secret, quote(secret, safe=""), quote(secret))}


def violations(run: Observed, db: Database | None = None, secrets: Iterable[str] = ()) -> list[str]:
    """Every promise ``run`` broke (empty: it kept them all)."""
    if run.code is None:
        return ["hung: the process did not end within the bound"]
    found: list[str] = []
    for promise in (_exit_is_the_summarys, _stdout_is_output, _no_internal_error):
        found += promise(run)
    found += _no_secret(run, secret_spellings([PASSWORD, *secrets]))
    if db is not None:
        found += _database_as_reported(run, db)
    return found


def _log_events(run: Observed) -> list[dict[str, Any]]:
    """The run's events: on its log stream; when stdout was lost, a writer's last words may
    have moved to stderr (the only stream left)."""
    primary = run.stdout if run.log_stream == "stdout" else run.stderr
    events = events_in(primary)
    if run.stdout_lost and run.log_stream == "stdout":
        events += events_in(run.stderr)
    return events


def _exit_is_the_summarys(run: Observed) -> list[str]:
    events = _log_events(run)
    names = [e["event"] for e in events]
    summaries = [e for e in events if e["event"] == run.summary_event]
    if not summaries:
        return [f"promise 1: no {run.summary_event} (exit {run.code})"]
    found = []
    if len(summaries) > 1:
        found.append(f"promise 1: {len(summaries)} summaries")
    if names[-1] != run.summary_event:
        found.append(f"promise 1: the summary is not the last event (then {names[-1]!r})")
    if summaries[-1].get("exit_code") != run.code:
        found.append(
            f"promise 1: the summary says {summaries[-1].get('exit_code')}, the process {run.code}"
        )
    if "_aws" not in summaries[-1]:  # ecs.summary too: the launcher's own Failures
        found.append("promise 1: the summary has no EMF metrics")
    if run.code not in (0, *VERDICTS) and "error" not in names:
        found.append(f"promise 1: exit {run.code} without an error event")
    return found


def _stdout_is_output(run: Observed) -> list[str]:
    if run.stdout_lost:
        return []
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    found = []
    if run.log_stream == "stdout":
        raw = [line for line in lines if not events_in(line)]
        if raw:
            found.append(f"promise 2: stdout carries raw lines among the events: {raw[:2]}")
    elif run.json_document and run.code in (0, ExitCode.NOT_AT_HEAD, ExitCode.DATABASE_AHEAD):
        try:
            json.loads(run.stdout)
        except ValueError:
            found.append(f"promise 2: stdout is not one JSON document: {run.stdout[:200]!r}")
    elif run.log_stream == "stderr" and any(events_in(line) for line in lines):
        found.append("promise 2: log events on stdout of a command that prints a result")
    for line in lines:
        if PRINTED in line and not any(e["event"] == "revision.output" for e in events_in(line)):
            found.append("promise 2: a revision's print reached stdout raw")
            break
    return found


def _no_internal_error(run: Observed) -> list[str]:
    found = []
    everything = run.stdout + run.stderr
    if run.code == 1 or "please report" in everything:
        found.append(f"promise 4: an internal error (exit {run.code})")
    if "Traceback" in everything:
        found.append("promise 4: a traceback in the output")
    if run.code not in DOCUMENTED and run.code != 0:
        found.append(f"promise 4: exit {run.code} is not a documented code")
    if run.signal is not None and run.code not in _signal_codes(run):
        found.append(f"promise 5: {run.signal} ended the run with {run.code}")
    return found


def _signal_codes(run: Observed) -> set[int]:
    if run.summary_event != "summary":
        return {int(LaunchExit.INTERRUPTED)}
    if run.signal == "SIGPIPE":
        return {int(ExitCode.OUTPUT_CLOSED)}
    return {int(ExitCode.INTERRUPTED)}


def _no_secret(run: Observed, spellings: set[str]) -> list[str]:
    everything = run.stdout + run.stderr
    return [
        "promise 3: a secret in the output" for s in sorted(spellings) if s and s in everything
    ][:1]


def _database_as_reported(run: Observed, db: Database) -> list[str]:
    found = []
    deadline = time.monotonic() + 10  # a killed backend takes a moment to be noticed
    while db.advisory_locks() and time.monotonic() < deadline:
        time.sleep(0.05)
    if db.advisory_locks():
        found.append("promise 5: the migration lock is still held after the run")
    version = db.version()
    for rev in run.chain:
        applied = _applied(rev, version, run.chain)
        if applied != db.table_exists(f"t_{rev}"):
            found.append(
                f"promise 6: revision {rev} is {'' if applied else 'not '}in alembic_version "
                f"({version}) but its table {'is missing' if applied else 'exists'}"
            )
    summaries = [e for e in _log_events(run) if e["event"] == "summary"]
    reported = summaries[-1].get("to_revision") if summaries else None
    if reported is not None and sorted(reported) != version:
        found.append(
            f"promise 6: the summary says the database is at {reported}, it is at {version}"
        )
    return found


def _applied(rev: str, version: list[str], chain: tuple[str, ...]) -> bool:
    """In a linear ``chain``: ``rev`` is applied when the version is ``rev`` or later."""
    return any(chain.index(v) >= chain.index(rev) for v in version if v in chain)
