"""Scenario 4, hand-off: from the moment a holder releases the migration lock to the moment
a blocked waiter proceeds, with N runners queued behind the lock; median and p95, from the
runners' own logs and from the server's statement log.

    uv run --group bench python bench/handoff.py [--smoke|--quick] [--runners 20] [--rounds 3]
                                                 [--revisions 3] [--round-timeout 180]
                                                 [--no-server-log]

Per round: a fresh database; this script takes the migration lock itself, starts N
``python -m runner upgrade`` processes (the runtime virtualenv's python), waits until every
one has logged ``lock.waiting``, then releases the lock the way the runner does (unlock +
NOTIFY in one statement). The runners then take the lock one after another (the first
applies the revisions, the rest find nothing to do). A hand-off is

* first:  first ``lock.acquired`` timestamp - this script's release time (``time.time()``
  just after the unlock statement returned, as the runner logs ``lock.released``);
* others: each ``lock.acquired`` - the ``lock.released`` of the runner that held the lock
  just before;
* server view: each runner's successful ``pg_try_advisory_lock`` - the previous holder's
  ``pg_advisory_unlock``, both time-stamped by the server (1 ms resolution).

Run alone, it prints every hand-off of every round, then the scenario's Markdown; in
``run_all.py`` only the Markdown. Target: median hand-off under 10 ms (the server's view when
there is one).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _bench import (
    Bench,
    Failed,
    Section,
    Table,
    add_profile_options,
    bench_session,
    connect,
    create_database,
    describe,
    machine_lines,
    median,
    p95,
    profile_of,
    runner_env,
    with_bytecode,
)

from runner.lock.advisory import channel_for, lock_key

SIZES = {
    "smoke": {"runners": 3, "rounds": 1, "revisions": 3},
    "full": {"runners": 20, "rounds": 3, "revisions": 3},
}
SIZES["quick"] = dict(SIZES["full"], rounds=1)
TARGET_MS = 10.0
LOCK_NAME = "alembic:public.alembic_version"  # the runner's default lock name


def ts(event: dict[str, Any]) -> float:
    """An event's ISO-8601 timestamp as epoch seconds."""
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()


# With log_line_prefix '%n:%p:' and log_min_duration_statement = 0 the server logs, at the
# end of each statement's execution, "<epoch.ms>:<pid>:LOG:  duration: ... execute <name>: SQL".
ENTRY_START = re.compile(r"^\d+\.\d+:\d+:")
SERVER_LINE = re.compile(
    r"^(?P<t>\d+\.\d+):(?P<pid>\d+):LOG:  duration: [\d.]+ ms  "
    r"execute [^:]*: (?P<sql>.*)$"
)


def enable_statement_log(cluster: Any, password: str, dbname: str) -> None:
    """Make the server time-stamp every statement in ``dbname`` (epoch, ms resolution)."""
    with connect(cluster, password) as conn:
        conn.execute("ALTER SYSTEM SET log_line_prefix = '%n:%p:'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f'ALTER DATABASE "{dbname}" SET log_min_duration_statement = 0')
    time.sleep(0.3)  # the reload is asynchronous


def server_statements(log_text: str, pids: set[int]) -> list[tuple[float, int, str]]:
    """(server time, backend pid, SQL) of each lock-related statement ``pids`` executed."""
    found = []
    # a statement of several lines is logged on several lines, the later ones unprefixed:
    # one entry per prefixed line, its continuation lines joined to it
    entries: list[str] = []
    for line in log_text.splitlines():
        if ENTRY_START.match(line):
            entries.append(line)
        elif entries:
            entries[-1] += " " + line.strip()
    for line in entries:
        match = SERVER_LINE.match(line)
        if not match or int(match["pid"]) not in pids:
            continue
        sql = match["sql"]
        if "pg_try_advisory_lock" in sql or "pg_advisory_unlock" in sql:
            found.append((float(match["t"]), int(match["pid"]), sql))
    return found


class Runner:
    """One ``python -m runner upgrade`` process; its stdout JSON events are read in a thread."""

    def __init__(self, index: int, env: dict[str, str], python: str, cwd: Path) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            [python, "-m", "runner", "upgrade"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self.stderr = ""
        self.waiting = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.other_lines.append(line)
                continue
            self.events.append(event)
            if event.get("event") == "lock.waiting":
                self.waiting.set()
        self.done.set()

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def first(self, name: str, **match: Any) -> dict[str, Any] | None:
        for event in self.events:
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                return event
        return None

    def describe_failure(self) -> str:
        out = "".join(json.dumps(e) + "\n" for e in self.events[-10:]) + "".join(self.other_lines)
        return (
            f"runner {self.index} (pid {self.proc.pid}, exit {self.proc.poll()}):\n"
            f"{out}{self.stderr[-2000:]}"
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@dataclasses.dataclass
class Handoff:
    seq: int
    runner: int
    from_what: str
    latency_ms: float
    lock_wait_ms: int | None
    held_ms: float | None
    outcome: str | None


@dataclasses.dataclass
class RoundResult:
    handoffs: list[Handoff]  # from the runners' log timestamps (the target)
    server_ms: list[float] | None = None  # the same hand-offs as the server saw them
    tries: int | None = None  # pg_try_advisory_lock calls after the release
    order_agrees: bool | None = None  # log order of acquisitions == server order
    acquire_lag_ms: list[float] = dataclasses.field(default_factory=list)  # log - server
    release_lag_ms: list[float] = dataclasses.field(default_factory=list)  # log - server


class RoundFailed(RuntimeError):
    pass


def run_round(
    cluster: Any,
    password: str,
    ini: Path,
    runners: int,
    round_no: int,
    timeout_s: float,
    server_log: bool,
    pycache: Path,
    python: str,
    cwd: Path,
) -> RoundResult:
    """One round (the module's docstring); prints every hand-off."""
    dbname = f"handoff_{round_no}"
    create_database(cluster, password, dbname)
    if server_log:
        enable_statement_log(cluster, password, dbname)
    log_offset = cluster.log.stat().st_size if cluster.log.exists() else 0
    key = lock_key(LOCK_NAME)
    channel = channel_for(key)
    # A shared temporary bytecode cache only shortens the runners' start-up; hand-offs happen
    # after every runner is up and waiting.
    env = with_bytecode(runner_env(cluster.url(dbname), ini), pycache)
    deadline = time.monotonic() + timeout_s
    procs: list[Runner] = []
    with connect(cluster, password, dbname) as holder:
        holder_pid = holder.info.backend_pid
        row = holder.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            raise RoundFailed("could not take the migration lock for the benchmark")
        try:
            started = time.monotonic()
            procs = [Runner(i, env, python, cwd) for i in range(runners)]
            for proc in procs:
                while not proc.waiting.wait(timeout=0.1):
                    if proc.done.is_set() or proc.proc.poll() is not None:
                        proc.done.wait(timeout=5)
                        raise RoundFailed(
                            "a runner ended before waiting for the lock:\n"
                            + proc.describe_failure()
                        )
                    if time.monotonic() > deadline:
                        raise RoundFailed(
                            f"runner {proc.index} logged no lock.waiting within "
                            f"{timeout_s:g} s:\n" + proc.describe_failure()
                        )
            print(
                f"  all {runners} runners waiting after {time.monotonic() - started:.1f} s; "
                "releasing the lock"
            )
            time.sleep(0.2)  # let the last waiter reach its notifies() wait
            before = time.time()
            holder.execute("SELECT pg_advisory_unlock(%s), pg_notify(%s, '')", (key, channel))
            released = time.time()
            print(
                f"  release statement round trip: {(released - before) * 1000:.2f} ms "
                "(the release time used is the end of it, as the runner logs lock.released)"
            )
            for proc in procs:
                remaining = deadline - time.monotonic()
                try:
                    proc.proc.wait(timeout=max(0.1, remaining))
                except subprocess.TimeoutExpired:
                    raise RoundFailed(
                        f"runner {proc.index} did not finish within {timeout_s:g} s "
                        "of the round's start:\n" + proc.describe_failure()
                    ) from None
                proc.done.wait(timeout=10)
        finally:
            for proc in procs:
                proc.kill()

    # --- the runners' own log timestamps (what the target is about) ------------------
    rows = []
    for proc in procs:
        acquired = proc.first("lock.acquired")
        rel = proc.first("lock.released")
        summary = proc.first("summary") or {}
        if proc.proc.returncode != 0 or acquired is None or rel is None:
            raise RoundFailed(
                "a runner did not acquire and release the lock cleanly:\n" + proc.describe_failure()
            )
        rows.append((ts(acquired), ts(rel), proc, acquired, summary))
    rows.sort(key=lambda r: r[0])
    outcomes = [r[4].get("outcome") for r in rows]
    if outcomes.count("migrated") != 1 or outcomes.count("up_to_date") != runners - 1:
        print(f"  WARNING: unexpected outcomes {outcomes}")

    handoffs: list[Handoff] = []
    releases = sorted((r[1], r[2].index) for r in rows)
    misordered = []
    for seq, (acq_t, rel_t, proc, acquired, summary) in enumerate(rows):
        if seq == 0:
            prev_t, prev_what = released, "bench"
        else:
            prev_t, prev_proc = rows[seq - 1][1], rows[seq - 1][2]
            prev_what = f"runner {prev_proc.index}"
            # The brief's definition is "the immediately preceding lock.released from another
            # runner"; we pair with the previous holder's release and say when they differ.
            earlier = [r for r in releases if r[0] <= acq_t and r[1] != proc.index]
            if not earlier or earlier[-1][1] != prev_proc.index:
                misordered.append(seq)
        handoffs.append(
            Handoff(
                seq,
                proc.index,
                prev_what,
                (acq_t - prev_t) * 1000,
                acquired.get("waited_ms"),
                (rel_t - acq_t) * 1000,
                summary.get("outcome"),
            )
        )
    result = RoundResult(handoffs)

    # --- the server's view: when each unlock / successful try actually executed -------
    if server_log:
        text = cluster.log.read_bytes()[log_offset:].decode(errors="replace")
        pid_of = {}
        for proc in procs:
            connected = proc.first("db.connected")
            if connected:
                pid_of[proc.index] = connected["backend_pid"]
        stmts = server_statements(text, set(pid_of.values()) | {holder_pid})
        unlock_at = {pid: t for t, pid, sql in stmts if "pg_advisory_unlock" in sql}
        last_try = {}
        for t, pid, sql in stmts:
            if "pg_try_advisory_lock" in sql:
                last_try[pid] = t  # a runner stops trying once a try succeeds
        release_t = unlock_at.get(holder_pid)
        if release_t is not None and all(pid_of.get(r[2].index) in last_try for r in rows):
            order = sorted(pid_of.values(), key=lambda pid: last_try[pid])
            result.order_agrees = order == [pid_of[r[2].index] for r in rows]
            prev_release = release_t
            result.server_ms = []
            for pid in order:
                result.server_ms.append((last_try[pid] - prev_release) * 1000)
                prev_release = unlock_at.get(pid, float("nan"))
            result.tries = sum(
                1 for t, pid, sql in stmts if "pg_try_advisory_lock" in sql and t >= release_t
            )
            # How late each runner's log line is after the operation it reports.
            for acq_t, rel_t, proc, _acquired, _summary in rows:
                pid = pid_of[proc.index]
                result.acquire_lag_ms.append((acq_t - last_try[pid]) * 1000)
                result.release_lag_ms.append((rel_t - unlock_at.get(pid, float("nan"))) * 1000)
        else:
            print("  NOTE: server log incomplete; no server-side view this round")

    show_server = bool(result.server_ms) and bool(result.order_agrees)
    print(
        f"  {'#':>3} {'runner':>6}  {'after release by':<16} {'hand-off ms':>11} "
        f"{'server ms':>9} {'held ms':>8} {'waited ms':>9} {'acq log lag':>11} "
        f"{'rel log lag':>11}  outcome"
    )
    for h in handoffs:
        if show_server:
            assert result.server_ms is not None
            server_col = f"{result.server_ms[h.seq]:>9.0f}"
            lags = f"{result.acquire_lag_ms[h.seq]:>11.0f} {result.release_lag_ms[h.seq]:>11.0f}"
        else:
            server_col, lags = f"{'-':>9}", f"{'-':>11} {'-':>11}"
        print(
            f"  {h.seq:>3} {h.runner:>6}  {h.from_what:<16} {h.latency_ms:>11.2f} "
            f"{server_col} {h.held_ms:>8.2f} {h.lock_wait_ms!s:>9} {lags}  {h.outcome}"
            + (" *" if h.seq in misordered else "")
        )
    if misordered:
        print(
            "  * by log time, the last release before this acquisition is not the previous "
            "holder's (its lock.released line was logged late)"
        )
    negative = [h for h in handoffs if h.latency_ms < 0]
    if negative:
        print(
            f"  NOTE: {len(negative)} of {len(handoffs)} hand-offs are negative: the next "
            "runner logged lock.acquired before the previous holder logged lock.released"
        )
    if result.order_agrees is False:
        print("  NOTE: the server's order of acquisitions differs from the log timestamps' order")
    if result.tries is not None:
        print(
            f"  pg_try_advisory_lock calls after the release: {result.tries} for {runners} "
            f"acquisitions ({result.tries / runners:.1f} per hand-off)"
        )
    return result


def run(
    bench: Bench,
    out: Path,
    runners: int,
    rounds: int,
    revisions: int,
    transcript: bool = False,
    server_log: bool = True,
) -> Section:
    """The scenario: ``rounds`` rounds; with ``transcript`` every hand-off printed as it goes
    and the per-round figures at the end (the standalone run)."""
    del out  # no plots
    section = Section(f"4. Hand-off: {runners} runners queued behind the lock")
    project = bench.project(revisions)
    log_ms: list[float] = []
    server_ms: list[float] = []
    tries: list[float] = []
    printed = io.StringIO()
    results = []
    for r in range(rounds):
        try:
            with contextlib.redirect_stdout(sys.stdout if transcript else printed):
                print(f"-- round {r + 1}/{rounds}")
                got = run_round(
                    bench.cluster,
                    bench.password,
                    project.ini,
                    runners,
                    r,
                    bench.timeout,
                    server_log,
                    bench.cache,
                    bench.python,
                    bench.tmp,
                )
        except RoundFailed as exc:
            raise Failed(
                f"hand-off round {r} failed: {exc}\n{printed.getvalue()[-3000:]}"
            ) from None
        results.append(got)
        log_ms += [h.latency_ms for h in got.handoffs]
        server_ms += got.server_ms or []
        if got.tries is not None:
            tries.append(got.tries / runners)
    rows = [
        [
            "runners' own log (`lock.released` → next `lock.acquired`)",
            str(len(log_ms)),
            f"{median(log_ms):.1f} ms",
            f"{p95(log_ms):.1f} ms",
            f"{max(log_ms):.1f} ms",
        ]
    ]
    if server_ms:
        rows.append(
            [
                "server's statement log (unlock → successful `pg_try_advisory_lock`)",
                str(len(server_ms)),
                f"{median(server_ms):.1f} ms",
                f"{p95(server_ms):.1f} ms",
                f"{max(server_ms):.1f} ms",
            ]
        )
    section.tables.append(Table(["measured from", "hand-offs", "median", "p95", "max"], rows))
    section.intro = [
        f"{rounds} round(s): the bench holds the lock, starts {runners} runners on a database "
        f"{revisions} steps behind, waits until each logs `lock.waiting`, then releases the "
        "lock as the runner does (unlock and NOTIFY in one statement); the runners then take "
        "it one after another (the first migrates, the others find nothing to do). The log "
        "figures carry each process's scheduling delay between the operation and its log "
        "line (they can even be negative); the server's figures are 1 ms-resolution statement "
        "end times."
    ]
    best = server_ms or log_ms
    section.target(
        f"hand-off median < {TARGET_MS:g} ms ({'server view' if server_ms else 'logs'})",
        f"{median(best):.1f} ms",
        median(best) < TARGET_MS,
    )
    if tries:
        section.notes.append(
            f"`pg_try_advisory_lock` calls per hand-off: {median(tries):.1f} "
            "(every release wakes every waiter; each tries once)"
        )
    section.notes.append(
        "every hand-off: `uv run --group bench python bench/handoff.py --runners "
        f"{runners} --rounds {rounds}`"
    )
    if transcript:
        print_summary(results, runners)
    return section


def report(title: str, values: list[float], unit_digits: int = 2) -> None:
    stats = describe(values)
    f = f".{unit_digits}f"
    print(
        f"{title}: n={stats['n']}  median={stats['median']:{f}} ms  p90={stats['p90']:{f}} ms  "
        f"max={stats['max']:{f}} ms  min={stats['min']:{f}} ms  mean={stats['mean']:{f}} ms"
    )


def print_summary(results: list[RoundResult], runners: int) -> None:
    """Per round and over all rounds: the log figures, split by who released, and the
    server's, with each runner's log lag."""
    for number, result in enumerate(results, 1):
        report(f"  round {number} (log timestamps)", [h.latency_ms for h in result.handoffs])
        if result.server_ms:
            report(f"  round {number} (server, 1 ms resolution)", result.server_ms, 0)
    handoffs = [h for r in results for h in r.handoffs]
    print("== all rounds (the runners' log timestamps)")
    report("all hand-offs", [h.latency_ms for h in handoffs])
    report("  runner -> runner only", [h.latency_ms for h in handoffs if h.seq > 0])
    report("  bench -> first runner", [h.latency_ms for h in handoffs if h.seq == 0])
    negative = [h for h in handoffs if h.latency_ms < 0]
    print(f"  negative: {len(negative)} of {len(handoffs)}")
    server = [v for r in results if r.server_ms for v in r.server_ms]
    if server:
        print("== cross-check (server statement log: successful try - previous unlock)")
        report("all hand-offs", server, 0)
        acq_lag = [x for r in results for x in r.acquire_lag_ms]
        rel_lag = [x for r in results for x in r.release_lag_ms if x == x]
        if acq_lag and rel_lag:
            report("  lock.acquired logged after the successful try", acq_lag, 0)
            report("  lock.released logged after the unlock", rel_lag, 0)
        tries = [r.tries for r in results if r.tries is not None]
        if tries:
            print(
                f"  pg_try_advisory_lock calls per hand-off: "
                f"{sum(tries) / (len(tries) * runners):.1f}"
            )
    if negative:
        print(
            "  caution: negative hand-offs mean a log line was written well after the lock "
            "operation it reports (the lag varies, see README); trust the server cross-check "
            "for individual values"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_profile_options(parser)
    parser.add_argument("--runners", type=int, help="runner processes per round (default 20)")
    parser.add_argument("--rounds", type=int, help="rounds, each on a fresh database (default 3)")
    parser.add_argument("--revisions", type=int, help="trivial revisions to apply (default 3)")
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=180.0,
        help="give up on a round after this many seconds (default 180)",
    )
    parser.add_argument(
        "--no-server-log",
        action="store_true",
        help="skip the server-side cross-check (statement logging)",
    )
    args = parser.parse_args()
    size = dict(SIZES[profile_of(args)])
    for key in size:
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    if size["runners"] < 2 or size["rounds"] < 1 or size["revisions"] < 1:
        parser.error("--runners must be >= 2, --rounds and --revisions >= 1")
    with bench_session(timeout=args.round_timeout) as bench:
        print("\n".join("  " + line for line in machine_lines(bench)), flush=True)
        print(
            f"  {size['runners']} runners x {size['rounds']} round(s), {size['revisions']} "
            f"revision(s), lock {LOCK_NAME!r} (key {lock_key(LOCK_NAME)})"
        )
        started = time.monotonic()
        try:
            section = run(
                bench, bench.tmp, **size, transcript=True, server_log=not args.no_server_log
            )
        except Failed as exc:
            print(f"FAILED: {exc}")
            return 1
        section.seconds = time.monotonic() - started
        print(section.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
