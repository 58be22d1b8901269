"""A snapshot before migrating (``MIGRATION_SNAPSHOT=instance|cluster``): the guide's
"Database backup taken", by machine.

Contract:
- :func:`take` is called by ``upgrade`` only when revisions are pending, under the migration
  lock, before the first revision: a no-op run and a herd's waiters (who find the work done
  under the lock) never take one.
- It creates an RDS DB snapshot (``instance``) or an Aurora DB cluster snapshot
  (``cluster``) named :func:`snapshot_name`, tagged with the revision range, the runner
  version and where it ran, and waits until it is ``available`` within the timeout.
- Any failure (no permission, unknown instance, no credentials, timeout) is a
  :class:`~runner.errors.SnapshotFailed` (exit 13): nothing was applied. boto3 (the ``aws``
  extra) is imported only here, only when snapshots are on.
- The IAM actions it needs: ``rds:CreateDBSnapshot`` + ``rds:DescribeDBSnapshots`` +
  ``rds:AddTagsToResource`` (instance), or the ``DBClusterSnapshot`` ones (cluster).
"""

from __future__ import annotations

import dataclasses
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, Interrupted, RunnerError, SnapshotFailed
from runner.process.interrupt import STOPPING

if TYPE_CHECKING:
    from runner.observe.logs import Log

POLL_S = 5.0
#: how often the waiting thread looks for a signal while the AWS calls run
WAKE_S = 0.1
#: an RDS endpoint: <identifier>.<random>.<region>.rds.amazonaws.com; an Aurora cluster's
#: writer endpoint: <identifier>.cluster-<random>.<region>.rds.amazonaws.com
_ENDPOINT = re.compile(
    r"^(?P<id>[a-z][a-z0-9-]*)\.(?P<cluster>cluster-(?:ro-)?)?[a-z0-9]+\.[a-z0-9-]+\.rds\.amazonaws\.com(?:\.cn)?$"
)


@dataclasses.dataclass(frozen=True)
class Request:
    kind: str  # instance | cluster
    identifier: str  # the DB instance or DB cluster identifier
    timeout_s: float


def infer_identifier(host: str | None) -> str | None:
    """The instance or cluster identifier an RDS endpoint names, else None. Pure."""
    found = _ENDPOINT.match((host or "").lower())
    return found.group("id") if found else None


def request(
    kind: str, identifier: str | None, host: str | None, timeout_s: float
) -> Request | None:
    """What ``MIGRATION_SNAPSHOT*`` ask for (None: off). Raises :class:`ConfigError` when no
    identifier is given and the host is no RDS endpoint. Pure."""
    if kind == "off":
        return None
    found = identifier or infer_identifier(host)
    if not found:
        raise ConfigError(
            f"MIGRATION_SNAPSHOT={kind} needs MIGRATION_SNAPSHOT_IDENTIFIER (the DB "
            f"{'cluster' if kind == 'cluster' else 'instance'} identifier): the database host "
            f"{host!r} is not an RDS endpoint it could be read from"
        )
    return Request(kind, found, timeout_s)


def snapshot_name(identifier: str, now: datetime) -> str:
    """``<identifier>-pre-migration-<UTC time>``, within RDS's naming rules. Pure."""
    return f"{identifier[:200]}-pre-migration-{now:%Y%m%d-%H%M%S}".replace("--", "-")


def tags(
    revisions: tuple[str, ...], target: tuple[str, ...], version: str, ran_on: str
) -> list[dict[str, str]]:
    """The snapshot's tags. Pure."""
    values = {
        "migration-runner:from": ",".join(revisions) or "base",
        "migration-runner:to": ",".join(target) or "base",
        "migration-runner:version": version,
        "migration-runner:ran-on": ran_on[:256],
    }
    return [{"Key": k, "Value": v} for k, v in values.items()]


def take(
    wanted: Request,
    name: str,
    tag_list: list[dict[str, str]],
    *,
    log: Log,
    check: Callable[[], None],
    client: Any = None,
) -> str:
    """Create snapshot ``name`` and wait until it is available; its name. The AWS calls run
    in a worker thread while this one calls ``check`` every ``WAKE_S``: a signal stops the
    wait promptly (``check`` raises :class:`Interrupted`, which passes through), even while
    an AWS call has not returned. Raises :class:`SnapshotFailed` for any failure of AWS's."""
    api = _Api(wanted.kind)
    started = time.monotonic()
    try:
        rds = client or _client()  # no region, no boto3 configuration: a failed snapshot too
        log.info("snapshot.started", kind=wanted.kind, identifier=wanted.identifier, snapshot=name)
        _in_worker(lambda stop: _create_and_wait(rds, api, wanted, name, tag_list, stop), check)
    except Interrupted as stopped:
        raise type(stopped)(
            f"{stopped.message}. The snapshot {name} may have been requested: RDS finishes "
            "it on its own (delete it if it is not wanted)",
            **{**stopped.fields, "snapshot": name},
        ) from None
    except RunnerError:
        raise
    except Exception as exc:  # botocore's ClientError, NoCredentialsError, EndpointConnectionError
        raise _failed(exc, wanted, api, name) from None
    log.info(
        "snapshot.available", snapshot=name, duration_ms=int((time.monotonic() - started) * 1000)
    )
    return name


def _create_and_wait(
    rds: Any, api: _Api, wanted: Request, name: str, tag_list: list[dict[str, str]], stop: Any
) -> None:
    """In the worker: create the snapshot, poll until available; returns early once
    ``stop`` (a ``threading.Event``) is set. Raises :class:`SnapshotFailed` on the timeout."""
    started = time.monotonic()
    getattr(rds, api.create)(
        **{api.id_arg: wanted.identifier, api.snapshot_arg: name, "Tags": tag_list}
    )
    while not stop.is_set() and _status(rds, api, name) != "available":
        if time.monotonic() - started > wanted.timeout_s:
            raise SnapshotFailed(
                f"snapshot {name} of {wanted.identifier} was not available within "
                f"MIGRATION_SNAPSHOT_TIMEOUT={wanted.timeout_s:g} s; nothing was applied",
                snapshot=name,
            )
        stop.wait(POLL_S)


def _in_worker(work: Callable[[threading.Event], None], check: Callable[[], None]) -> None:
    """Run ``work`` in a daemon thread, calling ``check`` every ``WAKE_S`` until it ends;
    re-raise what it raised. When ``check`` raises, ``work`` is told to stop (its event is
    set) and left to end its call in the background: nothing waits for AWS."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def body() -> None:
        try:
            work(stop)
        except BaseException as exc:  # re-raised in the calling thread
            failed.append(exc)

    worker = threading.Thread(target=body, daemon=True, name="snapshot")
    try:
        # signals blocked while it starts: the worker inherits the mask, so every stopping
        # signal reaches this thread, and none lands inside Thread.start() (which would leave
        # the thread half registered); one that came meanwhile is handled just after
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
        try:
            worker.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        while worker.is_alive():
            check()
            worker.join(WAKE_S)
    finally:
        stop.set()
    if failed:
        raise failed[0]


@dataclasses.dataclass(frozen=True)
class _Api:
    kind: str

    @property
    def create(self) -> str:
        return "create_db_cluster_snapshot" if self.kind == "cluster" else "create_db_snapshot"

    @property
    def id_arg(self) -> str:
        return "DBClusterIdentifier" if self.kind == "cluster" else "DBInstanceIdentifier"

    @property
    def snapshot_arg(self) -> str:
        return "DBClusterSnapshotIdentifier" if self.kind == "cluster" else "DBSnapshotIdentifier"

    @property
    def action(self) -> str:
        return "rds:CreateDBClusterSnapshot" if self.kind == "cluster" else "rds:CreateDBSnapshot"


def _status(rds: Any, api: _Api, name: str) -> str:
    if api.kind == "cluster":
        found = rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=name)
        return str(found["DBClusterSnapshots"][0]["Status"])
    return str(rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["Status"])


def _client() -> Any:
    try:
        import boto3  # the `aws` extra: only when snapshots are on
    except ImportError:
        raise ConfigError(
            "MIGRATION_SNAPSHOT needs boto3: install migration-runner[aws] (or turn "
            "snapshots off: MIGRATION_SNAPSHOT=off)"
        ) from None
    return boto3.client("rds")


def _failed(exc: Exception, wanted: Request, api: _Api, name: str) -> SnapshotFailed:
    error: Mapping[str, Any] = (getattr(exc, "response", None) or {}).get("Error") or {}
    code = str(error.get("Code") or type(exc).__name__)
    hint = (
        f"; the task role needs {api.action}, rds:Describe* and rds:AddTagsToResource"
        if "AccessDenied" in code or "Unauthorized" in code
        else ""
    )
    return SnapshotFailed(
        f"could not snapshot {wanted.kind} {wanted.identifier} before migrating ({code}: "
        f"{error.get('Message') or exc}){hint}; nothing was applied",
        snapshot=name,
        aws_error=code,
    )
