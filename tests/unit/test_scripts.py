"""Loading the scripts: broken files and several heads fail before any connection."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError, ScriptsInvalid
from runner.scripts import load as scripts
from tests.support.helpers import run, runner_env


def test_loads_revisions_in_order_with_their_heads(project):
    project.audited_chain(["a1", "a2", "a3"])
    loaded = scripts.load(project.ini)
    assert list(loaded.scripts.revisions) == ["a1", "a2", "a3"]
    assert loaded.scripts.heads == ("a3",)
    assert loaded.scripts.graph() == {"a1": (), "a2": ("a1",), "a3": ("a2",)}
    assert loaded.scripts.revisions["a2"].message == "step a2"


def test_missing_alembic_ini_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="ALEMBIC_CONFIG"):
        scripts.load(tmp_path / "nope.ini")


def test_revision_that_does_not_import_is_named(project):
    project.audited_chain(["a1"])
    broken = project.versions / "a2_step.py"
    broken.write_text("revision = 'a2'\ndown_revision = 'a1'\nimport not_a_module_anywhere\n")
    with pytest.raises(ScriptsInvalid) as err:
        scripts.load(project.ini)
    assert str(broken) in str(err.value) and "not_a_module_anywhere" in str(err.value)


def test_revision_with_a_syntax_error_is_named(project):
    project.audited_chain(["a1"])
    broken = project.versions / "a2_step.py"
    broken.write_text("revision = 'a2'\ndown_revision = 'a1'\ndef upgrade(:\n")
    with pytest.raises(ScriptsInvalid) as err:
        scripts.load(project.ini)
    assert str(broken) in str(err.value)


def test_several_heads_are_refused_for_head_but_not_for_heads(project):
    project.audited_chain(["a1"])
    project.revision("b1", "a1", "pass")
    project.revision("b2", "a1", "pass")
    loaded = scripts.load(project.ini)
    with pytest.raises(ScriptsInvalid) as err:
        scripts.resolve_target(loaded.scripts, loaded.directory, "head")
    assert "b1" in str(err.value) and "b2" in str(err.value) and "merge" in str(err.value)
    assert set(scripts.resolve_target(loaded.scripts, loaded.directory, "heads")) == {"b1", "b2"}


def test_unknown_or_unreachable_target_is_a_config_error(project):
    project.audited_chain(["a1"])
    loaded = scripts.load(project.ini)
    for target in ("zzzz", "+2", "a1@branch", "nolabel@head"):
        with pytest.raises(ConfigError, match="MIGRATION_TARGET"):
            scripts.resolve_target(loaded.scripts, loaded.directory, target)
    assert scripts.resolve_target(loaded.scripts, loaded.directory, "a1") == ("a1",)


def test_relative_and_branch_targets_resolve_as_alembic_reads_them(project):
    """The forms `alembic upgrade` accepts, relative to where the database is."""
    project.audited_chain(["a1", "a2", "a3"])
    project.revision("e1", None, "pass", branch_labels=("expand",))
    project.revision("e2", "e1", "pass")
    loaded = scripts.load(project.ini)

    def resolve(target, current=()):
        return scripts.resolve_target(loaded.scripts, loaded.directory, target, current)

    assert resolve("expand@head") == ("e2",)
    assert resolve("heads") == ("a3", "e2")
    assert resolve("expand@+1", ("a3",)) == ("e1",)
    assert resolve("a1+2") == ("a3",)
    assert resolve("+1", ("a1",)) == ("a2",)
    with pytest.raises(ConfigError, match="Ambiguous"):
        resolve("+1", ("a1", "e1"))
    with pytest.raises(ScriptsInvalid, match="MIGRATION_TARGET=heads"):
        resolve("head")


def test_several_version_locations_are_all_loaded(project):
    project.audited_chain(["a1"])
    other = project.root / "more_versions"
    other.mkdir()
    (other / "b1_more.py").write_text(
        "revision = 'b1'\ndown_revision = 'a1'\nbranch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    ini = project.ini.read_text().replace(
        "[alembic]\n",
        f"[alembic]\npath_separator = os\nversion_locations = {project.versions}:{other}\n",
        1,
    )
    project.ini.write_text(ini)
    loaded = scripts.load(project.ini)
    assert list(loaded.scripts.revisions) == ["a1", "b1"]
    assert len(loaded.scripts.versions) == 2
    (other / "b2_broken.py").write_text("revision = 'b2'\ndown_revision = 'b1'\nimport nowhere_x\n")
    with pytest.raises(ScriptsInvalid) as err:
        scripts.load(project.ini)
    assert str(other / "b2_broken.py") in str(err.value)


def test_broken_scripts_fail_the_run_before_connecting(project):
    project.revision("a1", None, "pass")
    project.revision("b1", "a1", "pass")
    project.revision("b2", "a1", "pass")
    # the database URL points nowhere: reaching it would mean a connection attempt
    result = run(
        runner_env(
            None,
            project,
            DATABASE_URL="postgresql://u:pw-unused@127.0.0.1:1/d",
            MIGRATION_DB_WAIT_TIMEOUT=30,
        )
    )
    assert result.code == 7
    assert result.event("error")["error_code"] == "scripts_invalid"
    assert not [e for e in result.events if e["event"].startswith("db.")]


def test_a_branchs_base_is_refused_as_a_downgrade_target():
    """Found by an attack on issue 22: ``downgrade contract@base`` reverted every branch (and
    ``nobranch@base`` was accepted), where Alembic reverts that branch only."""
    from runner.errors import ConfigError
    from runner.scripts.load import resolve_destination

    for target in ("contract@base", "nobranch@base"):
        with pytest.raises(ConfigError, match="branch's base"):
            resolve_destination(None, None, target, ("c2", "e2"))
