"""Scenario 5, waking up: the database comes up T seconds after the runner started; how long
after the server accepts connections does the runner connect, and how many connection
attempts per second did it spend waiting? Against ``dbmate --wait``.

    uv run --group bench python bench/wakeup.py [--smoke]

While the server is down, a plain TCP listener on its port accepts every connection and
closes it at once, counting them (each tool then sees "server closed the connection" and
retries, as it would for "connection refused"); it closes just before the server starts on
the same port. Times come from the server's own log (``log_connections``, epoch-stamped):
"ready to accept connections" to the tool's "connection authorized".
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from _bench import Bench, Failed, Section, Table, median, p95, plot, rotated, standalone

from devtools.pgcluster import Cluster

SIZES = {
    "smoke": {"delays": (1.0,), "rounds": 1, "revisions": 3},
    "full": {"delays": (1.5, 2.5, 3.5, 4.5, 5.5, 6.5), "rounds": 2, "revisions": 3},
}
SIZES["quick"] = dict(SIZES["full"], rounds=1)
TOOLS = ("runner", "dbmate")
P95_MS = 300.0
ATTEMPTS_PER_S = 5.0
LINE = re.compile(r"^(?P<t>\d+\.\d+)@(?P<msg>.*)$")


class Listener:
    """Accepts and closes connections on ``port`` until closed; counts them."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.opened = time.monotonic()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> float:
        """Stop listening; returns how long it listened."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
        return time.monotonic() - self.opened


def server_times(text: str, db: str) -> tuple[float | None, float | None]:
    """(ready to accept connections, first connection authorized to ``db``) in epoch s."""
    ready = connected = None
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        msg = match["msg"]
        if ready is None and "ready to accept connections" in msg:
            ready = float(match["t"])
        elif (
            ready is not None
            and connected is None
            and "connection authorized" in msg
            and f"database={db}" in msg
        ):
            connected = float(match["t"])
    return ready, connected


def run(bench: Bench, out: Path, delays: tuple[float, ...], rounds: int, revisions: int) -> Section:
    section = Section("5. Waking up: the server starts T s after the tool")
    project = bench.project(revisions)
    password = "wake-" + secrets.token_urlsafe(12)
    cluster = Cluster.create(password=password)
    own = bench.on(cluster, password)
    latency: dict[str, list[float]] = {t: [] for t in TOOLS}
    by_delay: dict[tuple[str, float], list[float]] = {(t, d): [] for t in TOOLS for d in delays}
    rate: dict[str, list[float]] = {t: [] for t in TOOLS}
    own_attempts: list[int] = []
    try:
        cluster.start(log_connections="on", log_line_prefix="%n@")
        dbs = {
            "runner": own.database_at("runner", project, "wake_runner", revisions),
            "dbmate": own.database_at("dbmate", project, "wake_dbmate", revisions),
        }
        cluster.stop()
        for r in range(rounds):
            for i, delay in enumerate(delays):
                for tool in rotated(TOOLS, r + i):
                    command = own.command(tool, project, dbs[tool], wait=True)
                    if tool == "runner":
                        command.env["DATABASE_URL"] += "?sslmode=disable"  # one try per attempt
                        command.env["MIGRATION_DB_WAIT_TIMEOUT"] = "120"
                    listener = Listener(cluster.port)
                    proc = own.start(command)
                    time.sleep(delay)
                    listened = listener.close()
                    offset = cluster.log.stat().st_size if cluster.log.exists() else 0
                    try:
                        cluster.start()
                        done = proc.reap(own.timeout)
                    finally:
                        cluster.stop()
                    if done.returncode != 0:
                        raise Failed(f"{tool} did not wake up:\n" + done.tail())
                    text = cluster.log.read_bytes()[offset:].decode(errors="replace")
                    ready, connected = server_times(text, dbs[tool])
                    if ready is None or connected is None:
                        raise Failed(
                            f"no ready/connection lines for {tool} in the server log:\n"
                            + text[-2000:]
                        )
                    latency[tool].append((connected - ready) * 1000)
                    by_delay[tool, delay].append((connected - ready) * 1000)
                    rate[tool].append(listener.count / listened)
                    if tool == "runner":
                        own_attempts.append(int(done.event("db.connected").get("attempt", -1)))
    finally:
        cluster.destroy()
    rows = [
        [
            tool,
            str(len(latency[tool])),
            f"{median(latency[tool]):.0f} ms",
            f"{p95(latency[tool]):.0f} ms",
            f"{max(latency[tool]):.0f} ms",
            f"{median(rate[tool]):.1f}/s",
        ]
        for tool in TOOLS
    ]
    section.tables.append(
        Table(
            [
                "tool",
                "runs",
                "accept → connected (median)",
                "p95",
                "max",
                "attempts per second while down (median)",
            ],
            rows,
        )
    )
    picture = plot(
        out / "wakeup.png",
        "Waking up: server started T s after the tool",
        "T (s)",
        "server accepting → tool connected (ms, median)",
        {tool: (list(delays), [median(by_delay[tool, d]) for d in delays]) for tool in TOOLS},
    )
    if picture:
        section.plots.append(picture)
    section.intro = [
        f"T = {', '.join(f'{d:g}' for d in delays)} s, {rounds} round(s), the two tools "
        "alternating. The runner with its defaults (jittered exponential backoff, "
        "`MIGRATION_RETRY_MAX_INTERVAL` 5 s); dbmate with `--wait` (a ping every second)."
    ]
    section.target(
        f"runner: p95 < {P95_MS:g} ms after the server accepts",
        f"{p95(latency['runner']):.0f} ms",
        p95(latency["runner"]) < P95_MS,
    )
    section.target(
        f"runner: ≤ {ATTEMPTS_PER_S:g} attempts/s while waiting",
        f"{max(rate['runner']):.1f}/s at most",
        max(rate["runner"]) <= ATTEMPTS_PER_S,
    )
    if p95(latency["runner"]) >= P95_MS:
        section.notes.append(
            "why the p95 is missed: the runner sleeps a jittered, exponentially growing "
            "interval between attempts, up to `MIGRATION_RETRY_MAX_INTERVAL` (5 s by default), "
            "so once it has waited a few seconds the server can be up for most of an interval "
            "before the next attempt; the per-run latencies are the distribution of that "
            "remainder. Both targets hold together only with a short steady interval once the "
            "first attempts have failed: e.g. 0.25 s ± 20 % (4 attempts/s, a worst case near 0.3 s "
            "plus the connection itself), instead of growing to 5 s."
        )
    section.notes.append(
        "the latency is bound by the retry schedule: a tool that sleeps up to S seconds between "
        "attempts connects on average about S/2 after the server comes up. Fewer attempts per "
        "second and a short wake-up pull in opposite directions; a tool can have both only by "
        "waiting on something that tells it the server is back (it cannot, over TCP) or by "
        "capping its interval low."
    )
    section.notes.append(
        f"the runner's own count of attempts (`db.connected` attempt, median "
        f"{median(own_attempts):.0f}) includes attempts refused in the moment between the "
        "listener closing and the server binding the port, which the listener does not see."
    )
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
