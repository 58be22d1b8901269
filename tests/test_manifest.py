"""The manifest: a no-op run imports no revision file, nor Alembic, nor SQLAlchemy."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, run, runner_env

PROBE = """
import json, sys
from runner.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": sorted(m for m in ("alembic", "sqlalchemy")
                  if m in sys.modules)}), file=sys.stderr)
"""


def _probe(env, *args) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_no_op_upgrade_and_check_with_a_manifest_import_neither_alembic_nor_sqlalchemy(database, project):
    project.audited_chain(["a1", "a2", "a3"])
    env = runner_env(database, project)
    assert run(env).code == 0
    written = run(env, "manifest", "--json")
    assert written.code == 0 and json.loads(written.stdout)["heads"] == ["a3"]

    assert _probe(env, "upgrade") == {"code": 0, "imported": []}
    assert _probe(env, "check") == {"code": 0, "imported": []}
    result = run(env)
    assert result.event("scripts.loaded")["source"] == "manifest"
    assert result.summary["outcome"] == "up_to_date"


def test_without_a_manifest_the_scripts_are_loaded(database, project):
    project.audited_chain(["a1"])
    env = runner_env(database, project)
    run(env)
    assert _probe(env, "upgrade")["imported"] == ["alembic", "sqlalchemy"]


def test_a_stale_manifest_is_ignored_with_a_warning(database, project):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    assert run(env, "upgrade", "a1").code == 0
    assert run(env, "manifest").code == 0
    project.revision("a3", "a2", "op.execute(\"INSERT INTO audit (rev) VALUES ('a3')\")")

    result = run(env)
    assert result.code == 0
    assert result.event("manifest.ignored")["reason"] == "stale"
    assert result.summary["applied"] == ["a2", "a3"]  # the manifest knew no a3


def test_a_current_manifest_with_pending_revisions_still_migrates(database, project):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    assert run(env, "manifest").code == 0
    result = run(env)
    assert result.code == 0 and result.summary["applied"] == ["a1", "a2"]
    assert [e["source"] for e in result.events if e["event"] == "scripts.loaded"] == ["manifest", "files"]


def test_a_corrupt_manifest_is_ignored(database, project):
    project.audited_chain(["a1"])
    (project.root / "migration-manifest.json").write_text("{not json")
    result = run(runner_env(database, project))
    assert result.code == 0
    assert result.event("manifest.ignored")["reason"] == "unreadable"
