"""application_name: who the runner is, for a DBA reading pg_stat_activity."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from runner.observe.ecs_metadata import parse_task
from runner.observe.identity import application_name, where_am_i

ARN = "arn:aws:ecs:eu-west-1:123456789012:task/prod-cluster/0123456789abcdef0123456789abcdef"


def test_application_name_carries_version_and_place_within_postgres_limit():
    name = application_name("task/" + "x" * 100, version="1.2.3")
    assert name.startswith("migration-runner/1.2.3 task/x")
    assert len(name.encode()) == 63


def test_non_ascii_host_names_are_made_safe():
    assert application_name("hôte", version="1").isascii()


def test_task_id_is_the_last_segment_of_the_task_arn():
    assert parse_task({"TaskARN": ARN}).task_id == "0123456789abcdef0123456789abcdef"
    assert parse_task({}) is None


@pytest.fixture
def metadata_endpoint():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"TaskARN": ARN}).encode() if self.path.endswith("/task") else b"{}"
            self.send_response(200 if self.path.endswith("/task") else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v4/container-id"
    server.shutdown()
    server.server_close()


def test_on_ecs_the_task_id_names_the_runner(metadata_endpoint):
    assert where_am_i(metadata_endpoint) == "task/0123456789abcdef0123456789abcdef"


def test_off_ecs_or_without_metadata_the_host_name_does():
    assert where_am_i(None) == socket.gethostname()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert where_am_i(f"http://127.0.0.1:{port}/v4/x", timeout_s=0.2) == socket.gethostname()
