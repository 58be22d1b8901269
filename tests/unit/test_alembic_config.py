"""Finding the Alembic configuration as Alembic does: alembic.ini, pyproject.toml's
[tool.alembic] beside it, either one named by ALEMBIC_CONFIG."""

from __future__ import annotations

import re

import pytest

from runner.errors import ConfigError
from runner.scripts.alembic_config import config_files

TOOL_ALEMBIC = '[tool.alembic]\nscript_location = "%(here)s/migrations"\n'


def test_an_ini_alone_is_the_configuration(tmp_path):
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    assert config_files(tmp_path / "alembic.ini") == (tmp_path / "alembic.ini", None)


def test_a_pyproject_with_tool_alembic_beside_the_ini_joins_it(tmp_path):
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    (tmp_path / "pyproject.toml").write_text(TOOL_ALEMBIC)
    assert config_files(tmp_path / "alembic.ini") == (
        tmp_path / "alembic.ini",
        tmp_path / "pyproject.toml",
    )


def test_a_pyproject_without_tool_alembic_or_unreadable_beside_the_ini_is_ignored(tmp_path):
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert config_files(tmp_path / "alembic.ini") == (tmp_path / "alembic.ini", None)
    (tmp_path / "pyproject.toml").write_text("not = [toml")
    assert config_files(tmp_path / "alembic.ini") == (tmp_path / "alembic.ini", None)


def test_the_default_ini_may_be_missing_when_pyproject_configures_alembic(tmp_path):
    (tmp_path / "pyproject.toml").write_text(TOOL_ALEMBIC)
    assert config_files(tmp_path / "alembic.ini") == (None, tmp_path / "pyproject.toml")


def test_alembic_config_may_name_the_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(TOOL_ALEMBIC)
    assert config_files(tmp_path / "pyproject.toml") == (None, tmp_path / "pyproject.toml")
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    assert config_files(tmp_path / "pyproject.toml") == (
        tmp_path / "alembic.ini",
        tmp_path / "pyproject.toml",
    )


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "no such file"),
        ("[project]\nname = 'x'\n", "no [tool.alembic]"),
        ("x = [", "not valid TOML"),
    ],
)
def test_a_named_pyproject_must_configure_alembic(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "pyproject.toml").write_text(content)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config_files(tmp_path / "pyproject.toml")


def test_nothing_at_all_names_both_files(tmp_path):
    with pytest.raises(ConfigError, match="alembic.ini, or pyproject.toml"):
        config_files(tmp_path / "alembic.ini")


def test_version_locations_setting_splits_as_alembic_splits_the_files_own():
    from runner.scripts.alembic_config import split_locations

    assert split_locations("a/versions, b/more c") == ("a/versions", "b/more", "c")
    assert split_locations("pkg:versions") == ("pkg:versions",)
    assert split_locations(None) == ()
    # a path with spaces: one location per line, or the separator path_separator declares
    assert split_locations("my versions\n more, stuff \n") == ("my versions", "more, stuff")
    assert split_locations("my versions:b c", ":") == ("my versions", "b c")
    assert split_locations("one dir", "\n") == ("one dir",)


def test_an_unknown_path_separator_is_named(tmp_path):
    from runner.scripts.alembic_config import Project, open_config

    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = m\npath_separator = tab\n")
    with pytest.raises(ConfigError, match="path_separator = 'tab'"):
        open_config(Project(tmp_path / "alembic.ini", None, "a b"))


def test_script_location_setting_stands_in_for_a_missing_file(tmp_path):
    from runner.scripts.alembic_config import Project, open_config

    config = open_config(
        Project(tmp_path / "alembic.ini", "migrations", "migrations/v1 migrations/v2")
    )
    assert config.config_file_name is None
    assert config.get_main_option("script_location") == "migrations"
    assert config.get_version_locations_list() == ["migrations/v1", "migrations/v2"]
    with pytest.raises(ConfigError, match="MIGRATION_SCRIPT_LOCATION"):
        open_config(Project(tmp_path / "alembic.ini"))
