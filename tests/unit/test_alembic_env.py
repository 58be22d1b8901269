"""The runner's seams into Alembic: the private APIs it relies on, and its configure hook."""

from __future__ import annotations

import importlib

import pytest

from runner.database.version_table import VersionTable
from runner.errors import ConfigError
from runner.execution.alembic_hooks import PRIVATE_API, with_runner_defaults


@pytest.mark.parametrize(
    ("module", "cls", "attribute"), PRIVATE_API, ids=[f"{c}.{a}" for _m, c, a in PRIVATE_API]
)
def test_every_private_alembic_api_the_runner_uses_still_exists(module, cls, attribute):
    """Fails loudly on an Alembic upgrade that removed or renamed one: the runner would
    break at run time. Re-check the execution against the new Alembic before widening the pin."""
    owner = getattr(importlib.import_module(module), cls)
    assert hasattr(owner, attribute), (
        f"Alembic {importlib.import_module('alembic').__version__} has no {cls}.{attribute}: "
        "runner/execution/alembic_hooks.py, runner/scripts/load.py and runner/execution/run.py rely on it"
    )


def test_configure_defaults_fill_in_and_a_conflicting_version_table_is_refused():
    seen = {}
    configure = with_runner_defaults(
        lambda **kw: seen.update(kw),
        VersionTable("v", "s"),
        on_apply="apply",
        on_configure=lambda _c: None,
        ledger_name="ledger",
    )
    configure(connection=None, on_version_apply="env_cb")
    assert seen["transaction_per_migration"] is True
    assert (seen["version_table"], seen["version_table_schema"]) == ("v", "s")
    assert seen["on_version_apply"] == ["env_cb", "apply"]
    assert seen["include_name"]("ledger", "table", {}) is False
    assert seen["include_name"]("other", "table", {}) is True
    with pytest.raises(ConfigError, match="MIGRATION_VERSION_TABLE"):
        configure(version_table="alembic_version")
