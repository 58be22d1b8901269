"""Expand and contract through every command, with real runner processes: the guide's
rename example (add the new column, copy, switch the app, drop the old one) split into the
phase that runs before the new code is live and the one that runs after."""

from __future__ import annotations

import json
from collections import Counter

from runner.errors import ExitCode
from tests.support.helpers import Running, run, runner_env

CONTRACT = 'migration_runner = {"phase": "contract"}\n'


def rename_history(project) -> None:
    """The guide's 'Renaming Columns Safely', one revision per step, each audited."""
    steps = [
        ("r1", "op.execute('CREATE TABLE calls (id bigint PRIMARY KEY, old_name text)')"),
        ("r2", "op.add_column('calls', sa.Column('new_name', sa.Text()))"),
        ("r3", "op.execute('UPDATE calls SET new_name = old_name WHERE new_name IS NULL')"),
        ("r4", "op.drop_column('calls', 'old_name')"),
        ("r5", "op.execute('CREATE INDEX calls_new_name ON calls (new_name)')"),
    ]
    down = None
    for rev, body in steps:
        audit = (
            "op.execute('CREATE TABLE audit (rev text NOT NULL)')\n" if rev == "r1" else ""
        ) + f"op.execute(\"INSERT INTO audit (rev) VALUES ('{rev}')\")\n"
        path = project.revision(rev, down, audit + body)
        if rev == "r4":
            path.write_text(CONTRACT + path.read_text())
        down = rev


def test_the_rename_example_runs_expand_then_contract(database, project):
    rename_history(project)
    env = runner_env(database, project)

    check = run(env, "check", "--phase", "expand", "--json")
    assert check.code == ExitCode.NOT_AT_HEAD, check.stderr

    expand = run(env, "upgrade", "--phase", "expand")
    expand.check_log_contract()
    assert expand.code == 0, expand.stdout
    assert expand.summary["applied"] == ["r1", "r2", "r3"]
    assert expand.summary["phase"] == "expand" and expand.summary["held"] == ["r4", "r5"]
    assert expand.summary["Phase"] == "expand"  # the EMF dimension
    assert database.version() == ["r3"]

    check = run(env, "check", "--phase", "expand", "--json")
    assert check.code == 0 and check.summary["outcome"] == "contract_pending", check.stderr
    assert run(env, "check").code == ExitCode.NOT_AT_HEAD

    again = run(env, "upgrade", "--phase", "expand")
    assert (again.code, again.summary["outcome"], again.summary["applied"]) == (0, "up_to_date", [])

    current = run(env, "current", "--json")
    assert "r4 (contract), r5 (expand)" in run(env, "current").stdout
    document = json.loads(current.stdout)
    assert {r["revision"]: r["phase"] for r in document["revisions"]} == {
        "r1": "expand",
        "r2": "expand",
        "r3": "expand",
        "r4": "contract",
        "r5": "expand",
    }
    assert "contract" in run(env, "history").stdout

    contract = run(env, "upgrade", "--phase", "contract")
    assert contract.code == 0 and contract.summary["applied"] == ["r4", "r5"], contract.stdout
    assert contract.summary["phase"] == "contract"
    assert database.version() == ["r5"] and run(env, "check").code == 0


def test_migration_phase_in_the_environment_is_the_default_phase(database, project):
    rename_history(project)
    result = run(runner_env(database, project, MIGRATION_PHASE="expand"), "upgrade")
    assert result.code == 0 and result.summary["applied"] == ["r1", "r2", "r3"]
    plain = run(runner_env(database, project), "upgrade")  # no phase: the rest
    assert plain.summary["applied"] == ["r4", "r5"] and plain.summary["phase"] is None


def test_a_herd_of_ten_expands_each_revision_once_and_leaves_contract_alone(database, project):
    rename_history(project)
    env = runner_env(database, project)
    procs = [Running(env, "upgrade", "--phase", "expand") for _ in range(10)]
    results = [p.finish(timeout=120) for p in procs]

    assert [r.code for r in results] == [0] * 10, [r.stdout for r in results if r.code]
    assert Counter(r for (r,) in database.query("SELECT rev FROM audit")) == {
        "r1": 1,
        "r2": 1,
        "r3": 1,
    }
    assert Counter(r.summary["outcome"] for r in results) == {"migrated": 1, "up_to_date": 9}
    assert all(r.summary["held"] == ["r4", "r5"] for r in results)
    assert database.query(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'calls' "
        "AND column_name = 'old_name'"
    ) == [(1,)]
    assert database.version() == ["r3"] and database.advisory_locks() == 0
    for result in results:
        result.assert_clean()


def test_an_unknown_phase_is_refused_naming_the_file(database, project):
    project.revision("x1", None, "pass").write_text(
        'migration_runner = {"phase": "later"}\n' + (project.versions / "x1_step.py").read_text()
    )
    result = run(runner_env(database, project), "upgrade")
    assert result.code == ExitCode.SCRIPTS_INVALID and "x1_step.py" in result.stdout
    assert "'expand', 'contract'" in result.stdout


def test_dry_run_of_the_expand_phase_lints_only_what_it_would_apply(database, project):
    rename_history(project)
    env = runner_env(database, project)
    result = run(env, "upgrade", "--dry-run", "--phase", "expand", "--json")
    document = json.loads(result.stdout)
    assert (document["pending"], document["held"]) == (["r1", "r2", "r3"], ["r4", "r5"])
    assert document["lint"]["revisions"] == ["r1", "r2", "r3"]
    assert result.code == 0 and database.version() == []


def test_check_and_upgrade_of_the_expand_phase_agree_on_an_empty_database(database, project):
    """Found in issue 21: with a contract revision first, ``check --phase expand`` said
    "behind" (11) on an empty database while ``upgrade --phase expand`` had nothing to do."""
    path = project.revision("c1", None, "op.execute('CREATE TABLE t (id int)')")
    path.write_text(CONTRACT + path.read_text())
    project.revision("e2", "c1", "op.execute('CREATE TABLE u (id int)')")
    env = runner_env(database, project)

    check = run(env, "check", "--phase", "expand", "--json")
    upgrade = run(env, "upgrade", "--phase", "expand")
    assert (upgrade.code, upgrade.summary["outcome"]) == (0, "up_to_date"), upgrade.stdout
    assert (check.code, check.summary["outcome"]) == (0, "contract_pending"), check.stderr
    check.check_log_contract()
    upgrade.check_log_contract()
    assert json.loads(check.stdout)["pending_expand"] == []
    assert run(env, "check").code == ExitCode.NOT_AT_HEAD  # without a phase: pending
    assert database.version() == []
