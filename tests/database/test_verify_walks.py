"""verify, part 2 (issue 26): irreversible downgrades are floors, several heads are walked
branch by branch, a broken env.py is named and leaves the walking checks incomplete, and a
model module env.py never imports is caught. Each seeded project here passed (or was
skipped) before."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from runner.checklist import render, verify
from runner.config.database_url import parse_database_url
from runner.errors import ExitCode, ScriptsInvalid
from tests.support.verify_helpers import History

CALLS = """
op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                sa.Column("phone", sa.String(32), nullable=False))
"""


@pytest.fixture
def history(tmp_path: Path) -> History:
    history = History(tmp_path / "project")
    history.add(CALLS, 'op.drop_table("calls")')
    return history


def _verify(history: History, database, *skip: str) -> verify.VerifyResult:
    return verify.run_verify(
        history.load(), parse_database_url(database.url()), skip=frozenset({"lint", *skip})
    )


def test_an_irreversible_downgrade_is_a_floor_noted_and_later_revisions_are_still_stepped(
    history, database
):
    floor = history.add(
        "op.execute(\"UPDATE calls SET phone = '+' || phone\")",
        'raise NotImplementedError("the old phone numbers are gone")',
    )
    later = history.add('op.create_index("ix_calls_phone", "calls", ["phone"])')  # no drop
    result = _verify(history, database, "models")
    assert result.irreversible == [floor]
    assert result.checks["steps"].notes == [
        f"{floor} (r02_step.py): downgrade() raises NotImplementedError: irreversible, a floor "
        "(its down/up not checked; the revisions after it still are)"
    ]
    assert [(f.check, f.revision) for f in result.failures] == [("steps", later)] * 2
    assert result.revisions_walked == 3


def test_a_history_whose_only_defect_is_an_irreversible_downgrade_passes(history, database):
    history.add("pass", 'raise NotImplementedError("one way")')
    result = _verify(history, database, "models")
    assert result.ok and result.checks["steps"].status == "passed"
    assert result.document()["irreversible"] == ["r02"]


def test_several_heads_are_walked_branch_by_branch_and_each_branch_is_stepped(history, database):
    history.revision(
        "b1", "r01", 'op.create_table("a", sa.Column("x", sa.Integer))', 'op.drop_table("a")'
    )
    history.revision("b2", "r01", 'op.create_index("ix_calls_phone", "calls", ["phone"])')
    result = _verify(history, database, "models")
    assert verify.walk_order(history.load().scripts) in (["r01", "b1", "b2"], ["r01", "b2", "b1"])
    assert result.revisions_walked == 3
    assert {(f.check, f.revision) for f in result.failures} == {("heads", None), ("steps", "b2")}
    assert "2 heads: walked branch by branch" in result.checks["steps"].notes


def test_several_heads_reach_the_models_check(history, database):
    history.revision(
        "b1", "r01", 'op.create_table("a", sa.Column("x", sa.Integer))', 'op.drop_table("a")'
    )
    history.revision(
        "b2", "r01", 'op.create_table("b", sa.Column("x", sa.Integer))', 'op.drop_table("b")'
    )
    history.models(
        'calls = sa.Table("calls", metadata, sa.Column("id", sa.BigInteger, sa.Identity(), '
        'primary_key=True), sa.Column("phone", sa.String(32), nullable=False))\n'
        'a = sa.Table("a", metadata, sa.Column("x", sa.Integer))\n'
    )
    result = _verify(history, database, "heads")
    assert [f.message for f in result.failures] == [
        "models and migrations differ: table b in the migrations only (add a revision: "
        "migration-runner revision --autogenerate -m ...)"
    ]


def test_a_broken_env_py_is_named_and_no_walking_check_claims_to_pass(history, database):
    history.add(
        'op.add_column("calls", sa.Column("note", sa.Text))', 'op.drop_column("calls", "note")'
    )
    env_py = history.root / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "context.configure(connection=connection, **options)",
            'context.configure(connection=connection, **options)\n        raise KeyError("DB_URL")',
        )
    )
    result = _verify(history, database)
    [failure] = result.failures
    assert (failure.check, failure.revision, failure.path) == ("upgrade", "r01", str(env_py))
    assert failure.message == (
        "env.py fails, so r01 (r01_step.py) cannot be applied and nothing from it on is "
        "checked: KeyError: 'DB_URL'"
    )
    statuses = {name: check.status for name, check in result.checks.items()}
    assert statuses == {
        "heads": "passed",
        "steps": "incomplete",
        "data": "incomplete",
        "models": "incomplete",
        "lint": "skipped",
    }
    assert result.checks["steps"].notes == ["the walk stopped at r01: 0 of 2 revision(s) walked"]
    text = render.verify_text(result)
    assert "PASSED   steps" not in text and "INCOMPLETE steps" in text
    assert text.endswith("verify failed: 0 revision(s) walked in " + text.rsplit(" in ", 1)[1])


def test_a_revision_that_does_not_apply_is_still_the_revisions_fault(tmp_path, database):
    history = History(tmp_path / "project")
    rev = history.add('op.execute("SELECT no_such_function()")')
    result = _verify(history, database, "models")
    [failure] = result.failures
    assert (failure.check, failure.revision) == ("upgrade", rev)
    assert failure.message.startswith(f"{rev} (r01_step.py) does not apply: UndefinedFunction")
    assert failure.path == str(history.versions / "r01_step.py")
    assert result.checks["steps"].status == "incomplete"


def test_a_revision_that_fails_for_another_reason_than_rows_is_not_blamed_on_them(
    history, database
):
    rev = history.add('op.execute("SELECT no_such_function()")')  # rows are in calls by now
    [failure] = _verify(history, database, "models").failures
    assert (failure.check, failure.revision) == ("upgrade", rev)
    assert failure.message.startswith(f"{rev} (r02_step.py) does not apply: UndefinedFunction")
    assert "empty tables" not in failure.message


def test_an_env_py_that_does_not_compile_is_named_before_anything_runs(history, database):
    """Loading the project compiles env.py first: verify refuses (exit 7) naming its file and
    line, and never reports a check as passed on a project it could not run."""
    env_py = history.root / "migrations" / "env.py"
    lines = env_py.read_text().count("\n")
    env_py.write_text(env_py.read_text() + "\n  oops\n")
    with pytest.raises(ScriptsInvalid) as raised:
        _verify(history, database, "models")
    assert f"{env_py}:{lines + 2}" in raised.value.message
    assert raised.value.exit_code == ExitCode.SCRIPTS_INVALID


PACKAGE_INIT = """
import sqlalchemy as sa

metadata = sa.MetaData()

from . import calls  # noqa: E402,F401  (orders is forgotten)
"""
ENV_PY = """
import sys

from alembic import context

sys.path.insert(0, {root!r})
from {package} import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
"""


def _models_package(history: History, with_orders_import: bool) -> str:
    package = f"models_{uuid.uuid4().hex[:10]}"  # each test its own: sys.modules keeps them
    root = history.root / "app"
    (root / package).mkdir(parents=True)
    init = PACKAGE_INIT + ("from . import orders  # noqa\n" if with_orders_import else "")
    (root / package / "__init__.py").write_text(textwrap.dedent(init))
    for table in ("calls", "orders"):
        (root / package / f"{table}.py").write_text(
            f"import sqlalchemy as sa\n\nfrom {package} import metadata\n\n"
            f'{table} = sa.Table("{table}", metadata, sa.Column("id", sa.BigInteger, '
            'sa.Identity(), primary_key=True), sa.Column("phone", sa.String(32), nullable=False))\n'
        )
    (history.root / "migrations" / "env.py").write_text(
        textwrap.dedent(ENV_PY.format(root=str(root), package=package))
    )
    return package


def test_a_model_module_env_py_never_imports_is_named(history, database):
    package = _models_package(history, with_orders_import=False)
    result = _verify(history, database)
    [failure] = result.failures
    assert failure.check == "models"
    assert failure.message == (
        f"model module {package}.orders is never imported by env.py: its table(s) orders are "
        "invisible to autogenerate and to this check (import it where target_metadata is built)"
    )
    assert failure.path == str(history.root / "app" / package / "orders.py")


def test_once_env_py_imports_it_the_missing_migration_is_what_fails(history, database):
    _models_package(history, with_orders_import=True)
    result = _verify(history, database)
    assert [f.message for f in result.failures] == [
        "models and migrations differ: table orders in the models only (add a revision: "
        "migration-runner revision --autogenerate -m ...)"
    ]
