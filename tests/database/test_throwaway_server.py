"""verify's own PostgreSQL in a deep temporary directory (a CI runner's TMPDIR, pytest's
tmp_path): the unix socket path there is longer than the 107 bytes a socket path may have,
and the server refused to start ("verify cannot start its own PostgreSQL", exit 2)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from runner.checklist.server_binaries import ClusterError
from runner.checklist.throwaway_server import SUN_PATH_MAX, Cluster


def test_a_cluster_in_a_deep_directory_starts_and_leaves_nothing_behind() -> None:
    top = Path(tempfile.mkdtemp(prefix="mr-deep-", dir="/tmp"))
    try:
        deep = top / ("d" * 100)
        deep.mkdir()
        for path in (top, deep):
            path.chmod(0o755)  # as root the server runs as postgres, which must reach it
        cluster = Cluster.create(password="s3cret", parent=str(deep))
        assert len(f"{cluster.root}/.s.PGSQL.{cluster.port}") > SUN_PATH_MAX
        try:
            cluster.start()
            with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            url = cluster.url().replace("postgresql+psycopg", "postgresql")
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT 2").fetchone() == (2,)
        finally:
            socket_dir = cluster.socket_dir
            cluster.destroy()
        assert list(deep.iterdir()) == []
        assert not socket_dir.exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to postgres")
def test_as_root_a_temporary_directory_postgres_cannot_enter_is_named() -> None:
    """Not "pwfile failed (1): initdb: could not open file ... Permission denied" followed by
    "Install PostgreSQL": the directory, and what to set."""
    closed = Path(tempfile.mkdtemp(prefix="mr-closed-", dir="/tmp"))  # 0700, root's
    try:
        with pytest.raises(ClusterError, match=f"cannot enter {closed} .mode 700.: set TMPDIR"):
            Cluster.create(password="s3cret", parent=str(closed))
        assert list(closed.iterdir()) == []
    finally:
        shutil.rmtree(closed, ignore_errors=True)
