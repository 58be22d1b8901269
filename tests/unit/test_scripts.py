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


def test_unknown_or_relative_target_is_a_config_error(project):
    project.audited_chain(["a1"])
    loaded = scripts.load(project.ini)
    for target in ("zzzz", "+1", "a1@branch"):
        with pytest.raises(ConfigError, match="MIGRATION_TARGET"):
            scripts.resolve_target(loaded.scripts, loaded.directory, target)
    assert scripts.resolve_target(loaded.scripts, loaded.directory, "a1") == ("a1",)


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
