"""`migration-runner verify` side by side with pytest-alembic: defects caught, false failures,
time, on the same projects and the same PostgreSQL.

    uv run python bench/verify_vs_pytest_alembic.py [--revisions 100] [--only NAME ...]

pytest-alembic (its four default tests and its three experimental ones, all with their
defaults) is installed from PyPI into a temporary virtual environment made here, with the
Alembic, SQLAlchemy and psycopg versions of this repository's lock: never a dependency of the
runner. Each project is run by both tools, each on a fresh empty database of one throwaway
cluster: `migration-runner verify --database-url URL --json` (every check, lint included, as
a team's CI runs it) and `pytest --test-alembic` with the plugin's documented fixtures
(`alembic_config`, `alembic_engine`). Times are wall-clock, process start to exit.

Projects: the service's own history (alembic/), a generated history of `--revisions`
revisions (bench/verify_time.py), four small clean ones (a merged branch, the guide's
add-nullable/backfill/SET NOT NULL sequence, an irreversible data migration whose
downgrade() raises NotImplementedError, a plain index) and ten seeded defects, each on the
same base revision with models that match head (but for the drift defect). Every env.py is
the one that works for both tools (PACKAGE_ENV_PY: models imported from a package). Prints one line per
project and tool, then the totals; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from _bench import ROOT, runtime_venv, throwaway_cluster  # puts the repository on sys.path
from verify_time import generate

from devtools.projects import History

BASE = (
    'op.create_table("calls", sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True), '
    'sa.Column("phone", sa.Text, nullable=False))'
)
CALLS = (
    'calls = sa.Table("calls", metadata, sa.Column("id", sa.BigInteger, sa.Identity(), '
    'primary_key=True), sa.Column("phone", sa.Text, nullable=False){extra})\n'
)
EXPERIMENTAL = "all_models_register_on_metadata, downgrade_leaves_no_trace"
CONFTEST = """
import pytest
import sqlalchemy as sa
from alembic.config import Config


@pytest.fixture
def alembic_config():
    # script_location too: the experimental model-import test runs a clean interpreter that
    # reads only the options given here, not the ini file
    location = Config({ini!r}).get_main_option("script_location")
    return {{"file": {ini!r}, "script_location": location}}


@pytest.fixture
def alembic_engine():
    return sa.create_engine({url!r}, poolclass=sa.pool.NullPool)
"""


def _base(root: Path) -> History:
    history = History(root)
    history.add(BASE, 'op.drop_table("calls")')
    return history


def _models(history: History, extra: str = "", more: str = "") -> Path:
    history.models(CALLS.format(extra=extra) + more)
    return as_package(history)


def as_package(history: History) -> Path:
    """Make the project look like a team's: its models.py becomes the package
    ``app/models_<id>`` that env.py imports (``prepend_sys_path`` puts ``app`` on the path,
    for every tool that reads alembic.ini). Returns the ini."""
    package = f"models_{uuid.uuid4().hex[:8]}"
    (history.root / "app" / package).mkdir(parents=True)
    models = history.root / "models.py"
    (history.root / "app" / package / "__init__.py").write_text(models.read_text())
    models.unlink()
    _package_env(history, package)
    return history.ini


def _package_env(history: History, package: str) -> None:
    history.ini.write_text(history.ini.read_text() + "prepend_sys_path = %(here)s/app\n")
    (history.root / "migrations" / "env.py").write_text(
        textwrap.dedent(PACKAGE_ENV_PY.format(package=package))
    )


def clean_merged(root: Path) -> Path:
    h = _base(root)
    h.revision(
        "b1", "r01", 'op.create_table("a", sa.Column("x", sa.Integer))', 'op.drop_table("a")'
    )
    h.revision(
        "b2", "r01", 'op.create_table("b", sa.Column("x", sa.Integer))', 'op.drop_table("b")'
    )
    h.revision("m1", ("b1", "b2"), "pass")
    return _models(
        h,
        more='a = sa.Table("a", metadata, sa.Column("x", sa.Integer))\n'
        'b = sa.Table("b", metadata, sa.Column("x", sa.Integer))\n',
    )


def clean_backfill(root: Path) -> Path:
    h = _base(root)
    h.add(
        'op.add_column("calls", sa.Column("region", sa.Text, nullable=True))',
        'op.drop_column("calls", "region")',
    )
    h.add("op.execute(\"UPDATE calls SET region = 'eu' WHERE region IS NULL\")")
    h.add(
        'op.alter_column("calls", "region", nullable=False)',
        'op.alter_column("calls", "region", nullable=True)',
    )
    return _models(h, ', sa.Column("region", sa.Text, nullable=False)')


def clean_irreversible(root: Path) -> Path:
    h = _base(root)
    h.add(
        "op.execute(\"UPDATE calls SET phone = '+' || phone\")",
        'raise NotImplementedError("the old phone numbers are gone")',
    )
    return _models(h)


def clean_index(root: Path) -> Path:
    h = _base(root)
    h.add(
        'op.create_index("ix_calls_phone", "calls", ["phone"])',
        'op.drop_index("ix_calls_phone", table_name="calls")',
    )
    return _models(h, more='sa.Index("ix_calls_phone", calls.c.phone)\n')


def index_left_behind(root: Path) -> Path:
    h = _base(root)
    h.add('op.create_index("ix_calls_phone", "calls", ["phone"])')
    return _models(h, more='sa.Index("ix_calls_phone", calls.c.phone)\n')


def enum_left_behind(root: Path) -> Path:
    h = _base(root)
    h.add(
        'op.create_table("moods", sa.Column("m", sa.Enum("sad", "happy", name="mood")))',
        'op.drop_table("moods")',
    )
    return _models(
        h,
        more='moods = sa.Table("moods", metadata, sa.Column("m", sa.Enum("sad", "happy", name="mood")))\n',
    )


def not_null_without_default(root: Path) -> Path:
    h = _base(root)
    h.add(
        'op.add_column("calls", sa.Column("region", sa.Text, nullable=False))',
        'op.drop_column("calls", "region")',
    )
    return _models(h, ', sa.Column("region", sa.Text, nullable=False)')


def unique_over_repeats(root: Path) -> Path:
    h = _base(root)
    h.add(
        'op.add_column("calls", sa.Column("kind", sa.Text, server_default="x"))',
        'op.drop_column("calls", "kind")',
    )
    h.add(
        'op.create_index("ux_calls_kind", "calls", ["kind"], unique=True)',
        'op.drop_index("ux_calls_kind", table_name="calls")',
    )
    return _models(
        h,
        ', sa.Column("kind", sa.Text, server_default="x")',
        'sa.Index("ux_calls_kind", calls.c.kind, unique=True)\n',
    )


def models_drift(root: Path) -> Path:
    return _models(_base(root), ', sa.Column("duration_s", sa.Integer)')


def two_heads(root: Path) -> Path:
    h = _base(root)
    h.revision(
        "b1", "r01", 'op.create_table("a", sa.Column("x", sa.Integer))', 'op.drop_table("a")'
    )
    h.revision(
        "b2", "r01", 'op.create_table("b", sa.Column("x", sa.Integer))', 'op.drop_table("b")'
    )
    return _models(
        h,
        more='a = sa.Table("a", metadata, sa.Column("x", sa.Integer))\n'
        'b = sa.Table("b", metadata, sa.Column("x", sa.Integer))\n',
    )


PACKAGE_ENV_PY = """
import contextlib

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from {package} import metadata

config = context.config
options = dict(target_metadata=metadata, transaction_per_migration=True, compare_type=True)
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    opened = contextlib.nullcontext(connectable) if isinstance(connectable, Connection) else connectable.connect()
    with opened as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
"""


def unimported_model_module(root: Path) -> Path:
    h = _base(root)
    package = f"models_{uuid.uuid4().hex[:8]}"
    (root / "app" / package).mkdir(parents=True)
    (root / "app" / package / "__init__.py").write_text(
        "import sqlalchemy as sa\n\nmetadata = sa.MetaData()\n\nfrom . import calls  # noqa\n"
    )
    (root / "app" / package / "calls.py").write_text(
        f"import sqlalchemy as sa\n\nfrom {package} import metadata\n\n" + CALLS.format(extra="")
    )
    (root / "app" / package / "orders.py").write_text(  # a model with no migration, unseen
        f"import sqlalchemy as sa\n\nfrom {package} import metadata\n\n"
        'orders = sa.Table("orders", metadata, sa.Column("id", sa.BigInteger, primary_key=True))\n'
    )
    _package_env(h, package)  # __init__ imports calls, not orders
    return h.ini


def downgrade_fails(root: Path) -> Path:
    h = _base(root)
    h.add('op.add_column("calls", sa.Column("note", sa.Text))', 'op.drop_column("calls", "nope")')
    return _models(h, ', sa.Column("note", sa.Text)')


def does_not_apply(root: Path) -> Path:
    h = _base(root)
    h.add('op.execute("SELECT no_such_function()")')
    return _models(h)


def downgrade_leaves_table(root: Path) -> Path:
    h = _base(root)
    h.add('op.create_table("t", sa.Column("x", sa.Integer))')
    return _models(h, more='t = sa.Table("t", metadata, sa.Column("x", sa.Integer))\n')


CLEAN: dict[str, Callable[[Path], Path]] = {
    "clean: merged branch": clean_merged,
    "clean: add nullable, backfill, SET NOT NULL": clean_backfill,
    "clean: irreversible data migration": clean_irreversible,
    "clean: an index": clean_index,
}
#: each defect, and the words a failure must contain to count as naming it (a tool that
#: fails for another reason has not caught it)
DEFECTS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "defect: downgrade leaves an index": (index_left_behind, ("ix_calls_phone", "r02")),
    "defect: downgrade leaves an enum type": (enum_left_behind, ("mood", "r02")),
    "defect: NOT NULL column without default (rows exist)": (
        not_null_without_default,
        ("region", "r02"),
    ),
    "defect: unique index over repeated values": (unique_over_repeats, ("ux_calls_kind", "r03")),
    "defect: models drift from migrations": (models_drift, ("duration_s",)),
    "defect: two heads": (two_heads, ("head",)),
    "defect: model module env.py never imports": (unimported_model_module, ("orders",)),
    "defect: downgrade fails": (downgrade_fails, ("nope", "r02")),
    "defect: revision does not apply": (does_not_apply, ("no_such_function", "r02")),
    "defect: downgrade leaves a table": (downgrade_leaves_table, ('"t"', "table t", "r02")),
}


def pytest_alembic_venv(root: Path) -> Path:
    """A virtual environment with pytest-alembic from PyPI and this lock's Alembic,
    SQLAlchemy, psycopg and the service's model dependencies; its python. pytest below 9: pytest-alembic 0.13.1's collector
    fails to collect under pytest 9 (``TestCollector`` has no ``_nodeid``)."""
    venv = root / "pytest-alembic-venv"
    subprocess.run(["uv", "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    # the service's models import its settings (pydantic-settings), and pytest-alembic's
    # model-import test imports every module of src.db (fastapi too): a team's test
    # environment has them, so this one does
    pins = [
        f"{name}=={importlib.metadata.version(name)}"
        for name in ("alembic", "sqlalchemy", "psycopg", "pydantic", "pydantic-settings", "fastapi")
    ]
    subprocess.run(
        ["uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
         "pytest-alembic", "pytest<9", *pins, f"psycopg-binary=={importlib.metadata.version('psycopg')}"],
        check=True,
    )  # fmt: skip
    return venv / "bin" / "python"


def run_verify(ini: Path, url: str, runner: str) -> tuple[float, bool, list[str], str]:
    """Wall time, whether it failed, its failures as ``check: message``, and all of them."""
    import json

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "MIGRATION_"))
    }
    env |= {"ALEMBIC_CONFIG": str(ini), "MIGRATION_LOG_FORMAT": "json"}
    started = time.monotonic()
    proc = subprocess.run(
        [runner, "verify", "--database-url", url, "--json"],
        env=env, cwd=ini.parent, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if proc.returncode not in (0, 20):
        return elapsed, True, [f"exit {proc.returncode}"], proc.stderr
    document = json.loads(proc.stdout)
    why = [f"{f['check']}: {f['message']}" for f in document["failures"]]
    return elapsed, not document["ok"], why, "\n".join(why)


def run_pytest_alembic(
    python: Path, ini: Path, url: str, work: Path
) -> tuple[float, bool, list[str]]:
    """Wall time, whether any test failed, and the failed tests with their first line."""
    (work / "tests").mkdir(parents=True)
    (work / "tests" / "conftest.py").write_text(
        textwrap.dedent(CONFTEST.format(ini=str(ini), url=url))
    )
    (work / "pytest.ini").write_text(
        f"[pytest]\npytest_alembic_include_experimental = {EXPERIMENTAL}\n"
    )
    # from the project's directory, as a team runs it (the experimental model-import test
    # opens ./alembic.ini in a clean interpreter); the tests bind to rootdir's tests/conftest.py
    started = time.monotonic()
    ran = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "--test-alembic", "-q",
         "-c", str(work / "pytest.ini"), "--rootdir", str(work),
         f"--junitxml={work / 'report.xml'}", str(work / "tests")],
        cwd=ini.parent, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if os.environ.get("BENCH_DEBUG"):
        print(ran.stdout[-4000:])
    failed = []
    cases = list(ET.parse(work / "report.xml").getroot().iter("testcase"))
    if not cases:
        failed.append("no test ran")
    full = []
    for case in cases:
        for problem in [*case.iter("failure"), *case.iter("error")]:
            text = f"{problem.get('message') or ''}\n{problem.text or ''}".strip()
            failed.append(f"{case.get('name')}: {text.splitlines()[0][:300] if text else ''}")
            full.append(text)
    return elapsed, bool(failed), failed, "\n".join(full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="project names containing these")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="verify-vs-pa-") as tmp,
        throwaway_cluster() as (cluster, password),
    ):
        root = Path(tmp)
        # verify as deployed: the runtime virtualenv with the `verify` extra
        verify_venv = runtime_venv(root / "verify-venv", ("verify",))
        print(f"migration-runner: {verify_venv.bin('migration-runner')}: {verify_venv.describe()}")
        python = pytest_alembic_venv(root)
        version = subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('pytest-alembic'))",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"pytest-alembic {version}; PostgreSQL binaries {cluster.bindir}")
        projects: dict[str, tuple[tuple[str, ...] | None, Callable[[Path], Path]]] = {
            "clean: the service's history": (None, lambda _root: ROOT / "alembic.ini"),
            f"clean: generated, {args.revisions} revisions": (None, lambda r: as_package(generate(r, args.revisions))),
            **{name: (None, build) for name, build in CLEAN.items()},
            **{name: (evidence, build) for name, (build, evidence) in DEFECTS.items()},
        }  # fmt: skip
        totals = {"verify": [0, 0, 0.0], "pytest-alembic": [0, 0, 0.0]}  # caught, false, seconds
        for index, (name, (evidence, build)) in enumerate(projects.items()):
            if args.only and not any(word in name for word in args.only):
                continue
            ini = build(root / f"p{index}")
            for tool in ("verify", "pytest-alembic"):
                dbname = f"b{index}_{tool.replace('-', '_')}"
                with _admin(cluster, password) as conn:
                    conn.execute(f'CREATE DATABASE "{dbname}"')
                url = cluster.url(dbname, password=password)
                if tool == "verify":
                    seconds, failed, why, text = run_verify(
                        ini, url, verify_venv.bin("migration-runner")
                    )
                else:
                    seconds, failed, why, text = run_pytest_alembic(
                        python, ini, url, root / f"pa{index}"
                    )
                named = failed and any(word in text for word in evidence or ())
                tally = totals[tool]
                tally[0] += named
                tally[1] += evidence is None and failed
                tally[2] += seconds
                verdict = (
                    ("CAUGHT" if named else "failed, not on it" if failed else "missed")
                    if evidence
                    else ("FALSE FAILURE" if failed else "ok")
                )
                print(f"{name:58} {tool:15} {verdict:17} {seconds:6.1f} s")
                for line in why[:4]:
                    print(f"{'':60}- {line}")
        for tool, (caught, false, seconds) in totals.items():
            print(
                f"TOTAL {tool:15} defects caught {caught}/{len(DEFECTS)}, false failures {false}/{len(CLEAN) + 2}, {seconds:.1f} s"
            )


def _admin(cluster, password):  # type: ignore[no-untyped-def]
    from _bench import connect

    return connect(cluster, password)


if __name__ == "__main__":
    main()
