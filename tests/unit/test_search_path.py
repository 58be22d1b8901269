"""Reading a search_path setting the way PostgreSQL does, to find the schemas it lists that
the role cannot use (runner/database/version_table.py)."""

from __future__ import annotations

import pytest

from runner.database.version_table import search_path_schemas


@pytest.mark.parametrize(
    ("setting", "schemas"),
    [
        ('"$user", public', ["me", "public"]),
        ("Vault,public", ["vault", "public"]),
        ('"My, ""S"" ", Pub', ['My, "S" ', "pub"]),
        ("$user", ["me"]),
        ('""', []),
        ("", []),
    ],
)
def test_search_path_names_its_schemas_in_order(setting, schemas):
    assert search_path_schemas(setting, "me") == schemas
