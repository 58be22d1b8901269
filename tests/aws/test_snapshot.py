"""The snapshot before migrating, against moto in server mode: one per migrating run, none
on a no-op or for a herd's waiters; a failure applies nothing and exits 13."""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from runner.errors import ConfigError, ExitCode, SnapshotFailed
from runner.execution.snapshot import infer_identifier, request
from runner.observe import logs
from tests.support.aws import FAKE_ENV
from tests.support.helpers import Running, run, runner_env, wait_until

REVS = ["s1", "s2"]


def _rds() -> Any:
    import boto3

    return boto3.client("rds")


def _instance(name: str = "prod-db") -> None:
    _rds().create_db_instance(
        DBInstanceIdentifier=name,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="app",
        MasterUserPassword="not-used-here",
    )


def _snapshots() -> list[dict[str, Any]]:
    return _rds().describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]


def _env(database: Any, project: Any, url: str, **settings: str) -> dict[str, str]:
    wanted = {"MIGRATION_SNAPSHOT": "instance", "MIGRATION_SNAPSHOT_IDENTIFIER": "prod-db"}
    return runner_env(database, project, **FAKE_ENV, AWS_ENDPOINT_URL=url, **{**wanted, **settings})


def test_a_migrating_run_takes_one_tagged_snapshot_first_and_names_it(
    aws_server: Any, database: Any, project: Any
) -> None:
    _instance()
    project.audited_chain(REVS)
    result = run(_env(database, project, aws_server.url))
    result.check_log_contract()
    assert result.code == 0, result.stdout
    [snapshot] = _snapshots()
    assert result.summary["snapshot"] == snapshot["DBSnapshotIdentifier"]
    assert snapshot["DBSnapshotIdentifier"].startswith("prod-db-pre-migration-")
    names = [e["event"] for e in result.events]
    assert names.index("snapshot.available") < names.index("revision.started")
    arn = snapshot["DBSnapshotArn"]
    tags = {
        t["Key"]: t["Value"] for t in _rds().list_tags_for_resource(ResourceName=arn)["TagList"]
    }
    assert tags["migration-runner:from"] == "base" and tags["migration-runner:to"] == "s2"

    again = run(_env(database, project, aws_server.url))  # a no-op: no snapshot
    assert again.code == 0 and again.summary["outcome"] == "up_to_date"
    assert again.summary["snapshot"] is None and len(_snapshots()) == 1


def test_a_herd_takes_one_snapshot(aws_server: Any, database: Any, project: Any) -> None:
    _instance()
    project.audited_chain(REVS)
    env = _env(database, project, aws_server.url)
    results = [p.finish(timeout=120) for p in [Running(env) for _ in range(5)]]
    assert [r.code for r in results] == [0] * 5, [r.stdout for r in results if r.code]
    assert Counter(r.summary["outcome"] for r in results) == {"migrated": 1, "up_to_date": 4}
    assert len(_snapshots()) == 1
    assert [r.summary["snapshot"] is not None for r in results].count(True) == 1


def test_a_failed_snapshot_applies_nothing_and_exits_13(
    aws_server: Any, database: Any, project: Any
) -> None:
    project.audited_chain(REVS)  # no such instance in this account
    result = run(_env(database, project, aws_server.url))
    result.check_log_contract()
    assert result.code == ExitCode.SNAPSHOT_FAILED
    assert "nothing was applied" in result.event("error")["message"]
    assert result.summary["applied"] == [] and database.version() == []
    assert database.advisory_locks() == 0
    result.assert_clean()


def test_the_identifier_is_read_from_an_rds_endpoint() -> None:
    assert infer_identifier("prod-db.c9akciq32.eu-west-1.rds.amazonaws.com") == "prod-db"
    assert infer_identifier("app.cluster-c9akciq32.eu-west-1.rds.amazonaws.com") == "app"
    assert infer_identifier("db.internal") is None and infer_identifier(None) is None
    assert request("off", None, "db.internal", 60) is None
    with pytest.raises(ConfigError, match="MIGRATION_SNAPSHOT_IDENTIFIER"):
        request("instance", None, "db.internal", 60)


def test_a_cluster_snapshot_for_aurora(aws_server: Any, database: Any, project: Any) -> None:
    _rds().create_db_cluster(
        DBClusterIdentifier="prod-aurora",
        Engine="aurora-postgresql",
        MasterUsername="app",
        MasterUserPassword="not-used-here",
    )
    project.audited_chain(REVS)
    env = _env(
        database,
        project,
        aws_server.url,
        MIGRATION_SNAPSHOT="cluster",
        MIGRATION_SNAPSHOT_IDENTIFIER="prod-aurora",
    )
    result = run(env)
    assert result.code == 0, result.stdout
    [snapshot] = _rds().describe_db_cluster_snapshots(SnapshotType="manual")["DBClusterSnapshots"]
    assert result.summary["snapshot"] == snapshot["DBClusterSnapshotIdentifier"]
    assert snapshot["DBClusterIdentifier"] == "prod-aurora"


class _NeverAvailable:
    """An RDS client whose snapshot stays 'creating' (AWS takes minutes; moto none)."""

    def create_db_snapshot(self, **_kw: Any) -> None:
        return None

    def describe_db_snapshots(self, **_kw: Any) -> dict[str, Any]:
        time.sleep(0.02)
        return {"DBSnapshots": [{"Status": "creating"}]}


def test_a_snapshot_not_available_in_time_is_a_failure_naming_the_setting(monkeypatch) -> None:
    from runner.execution import snapshot

    monkeypatch.setattr(snapshot, "POLL_S", 0.01)
    wanted = snapshot.Request("instance", "prod-db", 0.05)
    with pytest.raises(SnapshotFailed, match="MIGRATION_SNAPSHOT_TIMEOUT=0.05 s"):
        snapshot.take(wanted, "s", [], log=logs.get(), check=lambda: None, client=_NeverAvailable())


def test_no_aws_region_is_a_failed_snapshot_not_an_internal_error(monkeypatch) -> None:
    """Found by an attack on issue 24: boto3's NoRegionError came from making the client,
    outside the failure mapping, and ended as "internal error, please report"."""
    from runner.execution import snapshot

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    wanted = snapshot.Request("instance", "prod-db", 5.0)
    with pytest.raises(SnapshotFailed):
        snapshot.take(wanted, "s", [], log=logs.get(), check=lambda: None)


class _SlowRds(http.server.ThreadingHTTPServer):
    """RDS as slow as the real one, where moto is instant (its snapshots are ``available``
    at once): ``hold`` never answers CreateDBSnapshot (an AWS call that does not return);
    ``creating`` answers it, and every DescribeDBSnapshots says ``creating``. Serves on
    127.0.0.1 until closed; a held request is let go then."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        self.mode, self.released, self.polled = mode, threading.Event(), False
        super().__init__(("127.0.0.1", 0), _SlowRdsHandler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class _SlowRdsHandler(http.server.BaseHTTPRequestHandler):
    server: _SlowRds

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.server.mode == "hold":
            self.server.released.wait(120)
            return
        action = "CreateDBSnapshot" if "Action=CreateDBSnapshot" in body else "DescribeDBSnapshots"
        self.server.polled = self.server.polled or action == "DescribeDBSnapshots"
        inner = "<DBSnapshot><Status>creating</Status></DBSnapshot>"
        result = inner if action == "CreateDBSnapshot" else f"<DBSnapshots>{inner}</DBSnapshots>"
        payload = (
            f'<{action}Response xmlns="http://rds.amazonaws.com/doc/2014-10-31/">'
            f"<{action}Result>{result}</{action}Result></{action}Response>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.parametrize("mode", ["hold", "creating"])
def test_a_signal_while_the_snapshot_is_taken_stops_promptly_with_the_summary(
    database: Any, project: Any, mode: str
) -> None:
    project.audited_chain(REVS)
    rds = _SlowRds(mode)
    try:
        env = {**_env(database, project, rds.url), "AWS_MAX_ATTEMPTS": "1"}
        running = Running(env)
        running.wait_for_event("snapshot.started", timeout=60)
        if mode == "creating":  # the first status poll answered: now in the wait between polls
            wait_until(lambda: rds.polled, what="the first DescribeDBSnapshots")
        sent = running.signal(signal.SIGTERM)
        result = running.finish(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        rds.close()
    result.check_log_contract()
    assert result.code == ExitCode.INTERRUPTED, result.stdout
    assert result.event("error")["error_code"] == "interrupted", result.stdout
    assert stopped_after < 5, stopped_after  # a bound, far below botocore's 60 s read timeout
    assert result.summary["applied"] == [] and database.version() == []
    assert database.advisory_locks() == 0
    result.assert_clean()
