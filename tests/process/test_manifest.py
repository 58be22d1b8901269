"""The manifest: a no-op run imports no revision file, nor Alembic, nor SQLAlchemy."""

from __future__ import annotations

import json
import subprocess
import sys

from runner.lock.advisory import lock_key
from runner.scripts import manifest
from tests.support.helpers import ROOT, Running, age_files, run, runner_env

PROBE = """
import json, sys
from runner.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": sorted(m for m in ("alembic", "sqlalchemy")
                  if m in sys.modules)}), file=sys.stderr)
"""


def _probe(env, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_no_op_upgrade_and_check_with_a_manifest_import_neither_alembic_nor_sqlalchemy(
    database, project
):
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


#: what the no-op (an upgrade at head, with a manifest) must not import, by package: an
#: import budget by name, not by milliseconds (bench/noop.py measures the time). Each was
#: once imported there, or is what only migrating, --dry-run, verify or lint needs.
NOT_ON_THE_NO_OP = (
    "alembic",
    "sqlalchemy",
    "mako",
    "runner.checklist",  # lint, verify, the scratch server (and tarfile with it)
    "runner.commands.checklist",
    "runner.commands.authoring",
    "runner.commands.status",
    "runner.execution.run",
    "runner.execution.alembic_hooks",
    "runner.ecs",
    "boto3",
    "tarfile",
    "tomllib",  # pyproject.toml's [tool.alembic]: read only with Alembic's configuration
    "configparser",  # alembic.ini: likewise
    "tenacity",  # no longer a dependency: the connect retries are runner.database.connect's
)


def _imported(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` reported importing."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_the_no_op_stays_within_its_import_budget(database, project):
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    assert run(env).code == 0 and run(env, "manifest").code == 0
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and '"outcome": "up_to_date"' in proc.stdout, proc.stdout[-2000:]
    imported = _imported(proc.stderr)
    assert "runner.commands.migrate" in imported  # the report is read right
    over = sorted(
        m for m in imported if any(m == n or m.startswith(n + ".") for n in NOT_ON_THE_NO_OP)
    )
    assert over == []


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
    assert [e["source"] for e in result.events if e["event"] == "scripts.loaded"] == [
        "manifest",
        "files",
    ]


def test_a_corrupt_manifest_is_ignored(database, project):
    project.audited_chain(["a1"])
    (project.root / "migration-manifest.json").write_text("{not json")
    result = run(runner_env(database, project))
    assert result.code == 0
    assert result.event("manifest.ignored")["reason"] == "unreadable"


def test_a_manifest_that_does_not_describe_its_own_files_is_ignored(database, project):
    """Found by issue 21: a manifest hand-edited to drop the newest revision (its file still
    listed) made ``check`` exit 0 on a database that was behind."""
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    assert run(env, "upgrade", "a1").code == 0
    assert run(env, "manifest").code == 0
    path = project.root / "migration-manifest.json"
    document = json.loads(path.read_text())
    document["revisions"] = [r for r in document["revisions"] if r["id"] != "a2"]
    document["heads"] = ["a1"]
    path.write_text(json.dumps(document))
    result = run(env, "check")
    assert result.summary["exit_code"] == result.code == 11, (
        result.stderr
    )  # behind, as the files say
    assert result.event("manifest.ignored")["reason"] == "inconsistent"


def test_inconsistency_names_what_a_manifest_gets_wrong():
    good = {
        "files": {"v/a1.py": {}, "v/a2.py": {}, "v/__init__.py": {}},
        "heads": ["a2"],
        "revisions": [
            {"id": "a1", "down": [], "path": "v/a1.py"},
            {"id": "a2", "down": ["a1"], "path": "v/a2.py"},
        ],
    }
    assert manifest.inconsistency(good) is None
    dropped = {**good, "revisions": good["revisions"][:1], "heads": ["a1"]}
    assert "files without a revision: v/a2.py" in manifest.inconsistency(dropped)
    assert "heads" in manifest.inconsistency({**good, "heads": ["a1"]})
    unknown_down = [good["revisions"][0], {"id": "a2", "down": ["zz"], "path": "v/a2.py"}]
    assert "down" in manifest.inconsistency({**good, "revisions": unknown_down})
    assert "not among" in manifest.inconsistency({**good, "files": {"v/a1.py": {}}})


# --- freshness: listing first, content only where the listing cannot tell -------------------

RECORDED = {
    "v/a.py": {"size": 10, "mtime_s": 100, "sha256": "x"},
    "v/b.py": {"size": 20, "mtime_s": None, "sha256": "y"},
}


def test_files_with_their_recorded_size_and_mtime_are_trusted_and_racy_ones_hashed():
    assert manifest.to_hash(RECORDED, {"v/a.py": (10, 100), "v/b.py": (20, 100)}) == ["v/b.py"]


def test_a_touched_file_must_be_hashed():
    assert manifest.to_hash(RECORDED, {"v/a.py": (10, 101), "v/b.py": (20, 5)}) == [
        "v/a.py",
        "v/b.py",
    ]


def test_a_file_added_removed_or_resized_makes_the_manifest_stale_without_hashing():
    assert manifest.to_hash(RECORDED, {"v/a.py": (10, 100)}) is None
    assert (
        manifest.to_hash(RECORDED, {**dict.fromkeys(RECORDED, (10, 100)), "v/c.py": (1, 1)}) is None
    )
    assert manifest.to_hash(RECORDED, {"v/a.py": (11, 100), "v/b.py": (20, 100)}) is None


def _manifest(project) -> dict:
    return json.loads((project.root / "migration-manifest.json").read_text())


def test_files_modified_just_before_the_manifest_are_recorded_racy(database, project):
    project.audited_chain(["a1"])
    env = runner_env(database, project)
    assert run(env).code == 0
    age_files(
        project.versions, -30
    )  # as if modified right now (plus any clock skew): never trusted by mtime
    assert run(env, "manifest").code == 0
    assert [f["mtime_s"] for f in _manifest(project)["files"].values()] == [None]
    result = run(env)
    assert result.event("scripts.loaded")["files_hashed"] == 1  # racy: hashed every time


def test_old_files_are_trusted_by_size_and_mtime_and_an_edit_is_caught(database, project):
    project.audited_chain(["a1", "a2"])
    age_files(project.versions, 3600)
    env = runner_env(database, project)
    assert run(env).code == 0 and run(env, "manifest").code == 0
    assert all(f["mtime_s"] for f in _manifest(project)["files"].values())
    first = run(env)
    assert first.event("scripts.loaded")["files_hashed"] == 0

    path = project.versions / "a2_step.py"
    path.touch()  # a new mtime, the same content: hashed, still current
    touched = run(env)
    assert (
        touched.event("scripts.loaded")["source"],
        touched.event("scripts.loaded")["files_hashed"],
    ) == ("manifest", 1)

    path.write_text(path.read_text().replace("'a2'", "'A2'"))  # same size, new content
    edited = run(env)
    assert edited.event("manifest.ignored")["reason"] == "stale"
    assert edited.event("scripts.loaded")["source"] == "files"


def test_a_waiter_that_finds_the_work_done_never_loads_the_revision_files(database, project):
    """A herd on a deploy: the waiters learn the graph from the manifest, find the database
    migrated once they get the lock, and exit without loading Alembic or a revision file."""
    project.audited_chain(["a1", "a2"])
    env = runner_env(database, project)
    assert run(env, "manifest").code == 0
    with database.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("alembic:public.alembic_version"),))
        waiter = Running(env)
        waiter.wait_for_event("lock.waiting")
        # someone else migrates meanwhile (a lock of another name: it does not wait for ours)
        assert run(dict(env, MIGRATION_LOCK_NAME="elsewhere")).code == 0
        holder.execute(
            "SELECT pg_advisory_unlock(%s)", (lock_key("alembic:public.alembic_version"),)
        )
        result = waiter.finish()
    assert result.code == 0
    assert result.event("upgrade.up_to_date")["locked"] is True
    assert [e["source"] for e in result.events if e["event"] == "scripts.loaded"] == ["manifest"]
