from pathlib import Path

import pytest

from migration_infra.heads import HeadsError, migration_heads
from tests.conftest import INFRA, write_revisions


def test_a_linear_history_has_its_last_revision_as_head(tmp_path):
    write_revisions(tmp_path, {"a1": None, "b2": "a1", "c3": "b2"})
    assert migration_heads(tmp_path) == ("c3",)


def test_branches_give_every_head_and_a_merge_joins_them(tmp_path):
    write_revisions(tmp_path, {"a1": None, "b2": "a1", "c3": "a1"})
    assert migration_heads(tmp_path) == ("b2", "c3")
    write_revisions(tmp_path, {"d4": ("b2", "c3")})
    assert migration_heads(tmp_path) == ("d4",)


def test_plain_assignments_and_subdirectories_are_read(tmp_path):
    (tmp_path / "2025").mkdir()
    (tmp_path / "2025" / "x_first.py").write_text("revision = 'x1'\ndown_revision = None\n")
    (tmp_path / "y_second.py").write_text("revision = 'y2'\ndown_revision = 'x1'\n")
    (tmp_path / "__init__.py").write_text("")
    assert migration_heads(tmp_path) == ("y2",)


def test_a_file_without_a_literal_revision_is_an_error(tmp_path):
    (tmp_path / "broken.py").write_text("revision = make_id()\n")
    with pytest.raises(HeadsError, match="broken.py"):
        migration_heads(tmp_path)


def test_a_missing_directory_names_the_setting(tmp_path):
    with pytest.raises(HeadsError, match="migrationsDir"):
        migration_heads(tmp_path / "nowhere")


def test_the_repositorys_own_migrations_have_one_head():
    heads = migration_heads(INFRA.parent / "alembic" / "versions")
    assert len(heads) == 1
    assert any(path.name.startswith(heads[0])
               for path in Path(INFRA.parent / "alembic" / "versions").glob("*.py"))
