"""The CloudWatch sink: batches within PutLogEvents' limits (pure), delivery to moto in server
mode, and real runner processes whose CloudWatch endpoint works, or answers only errors."""

from __future__ import annotations

import http.server
import io
import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.pgcluster import free_port
from runner.observe.cloudwatch_sink import (
    EVENT_OVERHEAD,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    CloudWatchSink,
    Event,
    batches,
    truncate,
)
from tests.support.aws import FAKE_ENV
from tests.support.helpers import Running, run, runner_env

REVS = ["a1", "a2"]


def test_batches_keep_the_order_and_at_most_10000_events_each() -> None:
    events = [Event(i, f"line {i}") for i in range(MAX_BATCH_EVENTS * 2 + 5)]

    result = list(batches(events))

    assert [len(b) for b in result] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 5]
    assert [e["message"] for b in result for e in b] == [e.message for e in events]


def test_batches_stay_within_1mib_counting_26_bytes_per_event() -> None:
    message = "x" * 100_000
    events = [Event(0, message) for _ in range(25)]

    result = list(batches(events))

    sizes = [sum(len(e["message"]) + EVENT_OVERHEAD for e in b) for b in result]
    assert all(size <= MAX_BATCH_BYTES for size in sizes)
    assert [len(b) for b in result] == [10, 10, 5]  # 10 * 100,026 fits, 11 would not


def test_an_oversized_message_is_cut_to_whole_characters() -> None:
    message = "é" * MAX_MESSAGE_BYTES  # two bytes each

    cut = truncate(message)

    assert len(cut.encode()) <= MAX_MESSAGE_BYTES
    assert len(cut.encode()) > MAX_MESSAGE_BYTES - 2
    assert set(cut) == {"é"}


def test_sink_creates_group_and_stream_and_delivers_lines_in_order(aws_server: Any) -> None:
    import boto3

    client = boto3.client("logs")
    sink = CloudWatchSink(client, "/runs/migrations", "ci/123", send_interval_s=0.05)
    lines = [json.dumps({"event": "step", "n": n}) for n in range(50)]
    for line in lines:
        sink.write(line + "\n")

    assert sink.close() == 0

    got = client.get_log_events(
        logGroupName="/runs/migrations", logStreamName="ci/123", startFromHead=True
    )["events"]
    assert [e["message"] for e in got] == lines


class _Failing(http.server.BaseHTTPRequestHandler):
    """A CloudWatch endpoint that answers every call with an error."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"__type":"ServiceUnavailableException","message":"down for the test"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_sink_reports_the_loss_once_when_every_call_fails(
    failing_endpoint: str, monkeypatch: Any
) -> None:
    import boto3
    from botocore.config import Config

    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    client = boto3.client(
        "logs", endpoint_url=failing_endpoint, config=Config(retries={"total_max_attempts": 1})
    )
    report = io.StringIO()
    sink = CloudWatchSink(
        client,
        "/runs/migrations",
        "ci/1",
        send_interval_s=0.02,
        flush_timeout_s=2,
        report_to=report,
    )
    for n in range(3):
        sink.write(f"line {n}\n")

    assert sink.close() == 3
    assert sink.close() == 0

    (line,) = report.getvalue().splitlines()
    warning = json.loads(line)
    assert warning["event"] == "cloudwatch.undelivered"
    assert warning["undelivered"] == 3 and warning["written"] == 3
    assert "down for the test" in warning["error"]
    assert _Failing.calls >= 1


def _sink_env(database: Any, project: Any, endpoint: str, stream: str) -> dict[str, str]:
    project.audited_chain(REVS)
    return runner_env(
        database,
        project,
        **FAKE_ENV,
        AWS_ENDPOINT_URL=endpoint,
        MIGRATION_CLOUDWATCH_LOG_GROUP="/runs/migrations",
        MIGRATION_CLOUDWATCH_LOG_STREAM=stream,
    )


def test_a_runner_sends_its_events_to_cloudwatch_too(
    aws_server: Any, database: Any, project: Any
) -> None:
    import boto3

    result = run(_sink_env(database, project, aws_server.url, "ci/42"))

    assert result.code == 0, result.stdout + result.stderr
    got = boto3.client("logs").get_log_events(
        logGroupName="/runs/migrations", logStreamName="ci/42", startFromHead=True
    )
    assert [e["message"] for e in got["events"]] == result.stdout.splitlines()
    assert json.loads(got["events"][-1]["message"])["event"] == "summary"
    assert "cloudwatch" not in result.stderr


def test_a_cloudwatch_outage_does_not_fail_the_migration(
    failing_endpoint: str, database: Any, project: Any
) -> None:
    result = run(_sink_env(database, project, failing_endpoint, "ci/43"))

    assert result.code == 0, result.stdout + result.stderr
    assert result.summary["outcome"] == "migrated"
    assert database.version() == ["a2"]
    result.assert_clean()
    reports = [
        json.loads(line) for line in result.stderr.splitlines() if "cloudwatch.undelivered" in line
    ]
    assert len(reports) == 1, result.stderr
    assert reports[0]["undelivered"] == len(result.stdout.splitlines())
    assert _Failing.calls >= 1


def test_a_runner_stopped_by_sigterm_still_flushes_every_line(
    aws_server: Any, project: Any
) -> None:
    import boto3

    project.audited_chain(REVS)
    nobody = f"postgresql://runner:not-the-password@127.0.0.1:{free_port()}/db"  # refused: the runner keeps waiting
    runner = Running(
        runner_env(
            None,
            project,
            **FAKE_ENV,
            DATABASE_URL=nobody,
            AWS_ENDPOINT_URL=aws_server.url,
            MIGRATION_CLOUDWATCH_LOG_GROUP="/runs/migrations",
            MIGRATION_CLOUDWATCH_LOG_STREAM="ci/44",
        )
    )
    runner.wait_for_event("db.connect_failed")
    runner.signal(signal.SIGTERM)
    result = runner.finish()

    assert result.code == 130, result.stdout + result.stderr
    got = boto3.client("logs").get_log_events(
        logGroupName="/runs/migrations", logStreamName="ci/44", startFromHead=True
    )
    assert [e["message"] for e in got["events"]] == result.stdout.splitlines(), result.stderr
    assert json.loads(got["events"][-1]["message"])["outcome"] == "interrupted"
