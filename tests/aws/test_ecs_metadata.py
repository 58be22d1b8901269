"""The ECS task metadata (v4), read from a local HTTP server standing in for the endpoint:
what a good answer gives, and that no bad answer (slow, garbage, refused) fails or holds
the run."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runner.observe.ecs_metadata import Task, parse_task, read_task
from tests.support.helpers import run, runner_env

# Shaped like the Fargate example in the AWS documentation (task-metadata-endpoint-v4-fargate).
TASK_DOCUMENT = {
    "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
    "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
    "Family": "orders-migrate",
    "Revision": "42",
    "DesiredStatus": "RUNNING",
    "KnownStatus": "RUNNING",
    "LaunchType": "FARGATE",
    "AvailabilityZone": "us-west-2d",
    "Containers": [{"Name": "migrate"}],
}
EXPECTED = Task(
    task_arn=TASK_DOCUMENT["TaskARN"],
    cluster=TASK_DOCUMENT["Cluster"],
    family_revision="orders-migrate:42",
    availability_zone="us-west-2d",
)
Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture(autouse=True)
def _fresh_reads() -> Iterator[None]:
    """read_task answers once per process: each test (and its ports) starts afresh."""
    read_task.cache_clear()
    yield
    read_task.cache_clear()


@pytest.fixture
def endpoint() -> Iterator[Callable[[Handler], str]]:
    """Serve ``/task`` with the handler a test gives; yields a function returning the
    ``ECS_CONTAINER_METADATA_URI_V4`` value. Stopped (and any held request released) after."""
    release = threading.Event()
    servers: list[ThreadingHTTPServer] = []

    def serve(handle: Handler) -> str:
        class Endpoint(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                assert self.path == "/v4/abc/task"
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
        server.daemon_threads = True
        server.release = release  # type: ignore[attr-defined]
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/v4/abc"

    yield serve
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handle


def test_a_task_document_gives_cluster_task_definition_and_zone(
    endpoint: Callable[[Handler], str],
) -> None:
    task, problem = read_task(endpoint(answer(200, json.dumps(TASK_DOCUMENT).encode())))
    assert (task, problem) == (EXPECTED, None)
    assert task.task_id == "e9028f8d5d8e4f258373e7b93ce9a3c3"
    assert task.log_fields() == {
        "ecs_cluster": TASK_DOCUMENT["Cluster"],
        "ecs_task_arn": TASK_DOCUMENT["TaskARN"],
        "ecs_task_definition": "orders-migrate:42",
        "ecs_az": "us-west-2d",
    }
    assert task.ran_on() == (
        "task/e9028f8d5d8e4f258373e7b93ce9a3c3 cluster/default orders-migrate:42 us-west-2d"
    )


def test_off_ecs_nothing_is_read() -> None:
    assert read_task(None) == (None, None)
    assert read_task("") == (None, None)


def test_an_ec2_task_without_zone_and_a_short_cluster_name() -> None:
    document = {
        "Cluster": "default",
        "TaskARN": "arn:aws:ecs:eu-west-1:1:task/abc",
        "Family": "migrate",
        "Revision": "3",
    }
    task = parse_task(document)
    assert task == Task(
        task_arn="arn:aws:ecs:eu-west-1:1:task/abc", cluster="default", family_revision="migrate:3"
    )
    assert task.ran_on() == "task/abc cluster/default migrate:3"
    assert "ecs_az" not in task.log_fields()


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<html>gateway error</html>", "the answer is not JSON"),
        (b"[1, 2, 3]", "the answer names no task (no TaskARN)"),
        (b'{"Cluster": "default", "TaskARN": 7}', "the answer names no task (no TaskARN)"),
        (b"\xff\xfe\x00garbage", "the answer is not JSON"),
    ],
    ids=["html", "not-an-object", "arn-not-a-string", "binary"],
)
def test_garbage_gives_no_task_and_says_why(
    endpoint: Callable[[Handler], str], body: bytes, reason: str
) -> None:
    assert read_task(endpoint(answer(200, body))) == (None, reason)


def test_an_error_status_gives_no_task(endpoint: Callable[[Handler], str]) -> None:
    task, problem = read_task(endpoint(answer(500, b"{}")))
    assert task is None
    assert problem is not None and "500" in problem


def test_an_oversized_answer_is_not_read_as_a_task(endpoint: Callable[[Handler], str]) -> None:
    huge = json.dumps({**TASK_DOCUMENT, "Padding": "x" * (2 << 20)}).encode()
    assert read_task(endpoint(answer(200, huge)), timeout_s=5) == (
        None,
        "the answer is too large to be a task document",
    )


def test_an_endpoint_that_never_answers_costs_at_most_the_timeout(
    endpoint: Callable[[Handler], str],
) -> None:
    def hang(request: BaseHTTPRequestHandler) -> None:
        request.server.release.wait(30)  # type: ignore[attr-defined]

    started = time.monotonic()
    task, problem = read_task(endpoint(hang), timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert task is None and problem is not None
    assert elapsed < 1.0, f"took {elapsed:.2f} s with a 0.3 s timeout"


def test_an_endpoint_that_dribbles_its_answer_costs_at_most_the_timeout(
    endpoint: Callable[[Handler], str],
) -> None:
    """Each byte arrives within the socket timeout, the whole answer never does."""

    def dribble(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "100000")
        request.end_headers()
        while not request.server.release.wait(0.05):  # type: ignore[attr-defined]
            request.wfile.write(b" ")
            request.wfile.flush()

    started = time.monotonic()
    task, problem = read_task(endpoint(dribble), timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert (task, problem) == (None, "no answer within 0.3 s")
    assert elapsed < 1.0, f"took {elapsed:.2f} s with a 0.3 s timeout"


def test_a_refused_connection_gives_no_task() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        task, problem = read_task(f"http://127.0.0.1:{port}/v4/abc")
    assert task is None
    assert problem is not None and "refused" in problem.lower()


def test_a_malformed_uri_gives_no_task() -> None:
    task, problem = read_task("not a url")
    assert task is None and problem


def test_the_task_is_read_once_per_process(endpoint: Callable[[Handler], str]) -> None:
    requests = []

    def count(request: BaseHTTPRequestHandler) -> None:
        requests.append(request.path)
        answer(200, json.dumps(TASK_DOCUMENT).encode())(request)

    uri = endpoint(count)
    assert read_task(uri) == read_task(uri) == (EXPECTED, None)
    assert requests == ["/v4/abc/task"]


def test_on_ecs_every_event_names_the_task_and_the_ledger_says_where_it_ran(
    endpoint: Callable[[Handler], str], database, project
) -> None:
    project.audited_chain(["m1"])
    uri = endpoint(answer(200, json.dumps(TASK_DOCUMENT).encode()))
    result = run(runner_env(database, project, ECS_CONTAINER_METADATA_URI_V4=uri))
    assert result.code == 0, result.stdout
    for event in result.events:
        assert event["ecs_task_arn"] == TASK_DOCUMENT["TaskARN"], event
        assert (event["ecs_cluster"], event["ecs_task_definition"], event["ecs_az"]) == (
            TASK_DOCUMENT["Cluster"],
            "orders-migrate:42",
            "us-west-2d",
        ), event
    assert database.query("SELECT ran_on FROM migration_runner_ledger WHERE revision = 'm1'") == [
        (EXPECTED.ran_on(),)
    ]


def test_a_broken_endpoint_costs_a_warning_not_the_run(
    endpoint: Callable[[Handler], str], database, project
) -> None:
    project.audited_chain(["m1"])
    uri = endpoint(answer(200, b"<html>oops</html>"))
    result = run(runner_env(database, project, ECS_CONTAINER_METADATA_URI_V4=uri))
    assert result.code == 0, result.stdout
    assert result.event("ecs.metadata_unavailable")["reason"] == "the answer is not JSON"
    assert all("ecs_task_arn" not in event for event in result.events)
    assert database.version() == ["m1"]
