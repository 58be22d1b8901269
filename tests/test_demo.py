"""The main job on a local default: ``migration-runner demo``."""

from __future__ import annotations

import subprocess

from tests.helpers import ROOT, command, runner_env


def test_demo_races_runners_at_a_throwaway_cluster_and_cleans_up():
    proc = subprocess.run(command("demo", "--runners", "3"), cwd=ROOT, env=runner_env(None),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 runner applied the migrations, 2 found nothing to do" in proc.stdout
    assert "alembic_version = ['ba8c60a76780']" in proc.stdout
    data_dir = [line for line in proc.stdout.splitlines() if "data in " in line][0].split("data in ")[1]
    assert not (ROOT / data_dir).exists()
    assert "Traceback" not in proc.stdout + proc.stderr
