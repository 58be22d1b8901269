"""The team guide's development workflows, end to end, as a new engineer follows them: in a
temporary copy of the project, editing the files the guide names, generating the revision
with ``migration-runner revision --autogenerate`` (or the package.json ``db:*`` scripts through
``npm run``), reviewing it, applying it, using it through the repository, rolling it back."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import ROOT, Database, Result, run
from tests.support.service_helpers import service_env

HEAD = "ba8c60a76780"
COPIED = ("alembic", "alembic.ini", "src", "package.json", "pyproject.toml", "uv.lock")


class GuideProject:
    """A copy of this project on its own database; ``run`` is ``migration-runner`` in it."""

    def __init__(self, root: Path, db: Database) -> None:
        self.root, self.db = root, db
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, root / name)
        self.env = service_env(db)

    def run(self, *args: str) -> Result:
        result = run(self.env, *args, cwd=self.root)
        assert result.code == 0, result.stdout + result.stderr
        return result

    def edit(self, path: str, old: str, new: str) -> None:
        file = self.root / path
        text = file.read_text()
        assert text.count(old) == 1, f"{old!r} not once in {path}"
        file.write_text(text.replace(old, new))

    def write(self, path: str, text: str) -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_text(textwrap.dedent(text).lstrip())

    def generated(self, slug: str) -> Path:
        found = list((self.root / "alembic" / "versions").glob(f"*_{slug}.py"))
        assert len(found) == 1, found
        return found[0]

    def python(self, source: str, *args: str) -> Any:
        """Run the Python ``source`` in a process in the copy (so it imports the copy's src/),
        with the service's settings; return what it prints, as JSON."""
        script = "import asyncio, json\n\n" + textwrap.dedent(source)
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def columns(self, table: str) -> list[str]:
        return [
            c
            for (c,) in self.db.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            )
        ]


def operations(path: Path) -> dict[str, list[str]]:
    """The ``op.*(...)`` calls in the revision's upgrade() and downgrade(), as source."""
    tree = ast.parse(path.read_text())
    out: dict[str, list[str]] = {}
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in ("upgrade", "downgrade"):
            out[fn.name] = [
                ast.unparse(node)
                for node in ast.walk(fn)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "op"
            ]
    return out


def down_revision(path: Path) -> Any:
    """The revision's ``down_revision`` (a plain or annotated assignment in the template)."""
    for node in ast.parse(path.read_text()).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "down_revision" and node.value:
            return ast.literal_eval(node.value)
    raise AssertionError(f"no down_revision in {path}")


DURATION_FIELD = """
    duration_seconds: Mapped[int | None] = mapped_column(
        Integer,
        nullable=True,
        comment="Call duration in seconds"
    )

    __table_args__"""

# the guide's step "Test your application works": the app's health check against this copy's
# migrations, and (argument "use") the new field through the repository
APP_CHECK = """
import sys
import httpx
from src.db.calls import CallRepository
from src.db.database import Database
from src.main import create_app

async def main():
    db = Database()
    out = {}
    try:
        if "use" in sys.argv[1:]:
            async with db.session() as session:
                call = await CallRepository(session).create("guide", "+15550123")
                call.duration_seconds = 42
            async with db.session() as session:
                out["duration_seconds"] = (await CallRepository(session).get_by_id(call.id)).duration_seconds
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(db)),
                                     base_url="http://service") as client:
            response = await client.get("/healthz")
        out["health"] = [response.status_code, response.json()["status"]]
    finally:
        await db.dispose()
    return out

print(json.dumps(asyncio.run(main())))
"""


def add_duration_column(project: GuideProject) -> None:
    """The guide's "Adding a New Column", step 1: the model."""
    project.edit(
        "src/db/calls/model.py", "from sqlalchemy import", "from sqlalchemy import Integer,"
    )
    project.edit("src/db/calls/model.py", "\n    __table_args__", DURATION_FIELD)


def review_duration_revision(path: Path) -> None:
    """Step 3, "ALWAYS review": exactly the one column, added and dropped, after the head."""
    assert down_revision(path) == HEAD
    assert operations(path) == {
        "upgrade": [
            "op.add_column('calls', sa.Column('duration_seconds', sa.Integer(), "
            "nullable=True, comment='Call duration in seconds'))"
        ],
        "downgrade": ["op.drop_column('calls', 'duration_seconds')"],
    }


@pytest.fixture
def guide_project(tmp_path: Path, fresh_migrated_database: Database) -> GuideProject:
    """A copy of the project whose database is at the head of its migrations."""
    return GuideProject(tmp_path / "server", fresh_migrated_database)


def test_adding_a_new_column_as_the_guide_shows(guide_project):
    project = guide_project
    add_duration_column(project)
    wrote = project.run("revision", "--autogenerate", "-m", "Add duration_seconds to calls")
    path = project.generated("add_duration_seconds_to_calls")
    assert str(path) in wrote.stdout
    review_duration_revision(path)

    project.run("upgrade")
    assert project.columns("calls")[-1] == "duration_seconds"
    assert project.db.version() == [path.name.split("_")[0]]
    assert project.python(APP_CHECK, "use") == {"duration_seconds": 42, "health": [200, "at_head"]}

    # the guide's "Testing Migrations": downgrade, then upgrade again
    project.run("downgrade", "-1")
    assert "duration_seconds" not in project.columns("calls")
    assert project.db.version() == [HEAD]
    assert project.python(APP_CHECK) == {"health": [503, "behind"]}
    project.run("upgrade")
    assert project.columns("calls")[-1] == "duration_seconds"
    assert project.db.query("SELECT count(*) FROM calls WHERE duration_seconds IS NULL") == [(1,)]


PROJECT_MODEL = """
    from sqlalchemy import String, Integer
    from sqlalchemy.orm import Mapped, mapped_column

    from src.db.database import Base

    class Project(Base):
        __tablename__ = "projects"

        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(255), nullable=False)
"""

PROJECT_REPOSITORY = """
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy import select

    from src.db.projects.model import Project

    class ProjectRepository:
        def __init__(self, session: AsyncSession):
            self.session = session

        async def get_by_id(self, project_id: int) -> Project | None:
            stmt = select(Project).where(Project.id == project_id)
            result = await self.session.execute(stmt)
            return result.scalar_one_or_none()
"""

USE_PROJECTS = """
from sqlalchemy import text
from src.db.database import Database
from src.db.projects.repository import ProjectRepository

async def main():
    db = Database()
    try:
        async with db.session() as session:
            await session.execute(text("INSERT INTO projects (id, name) VALUES (7, 'Apollo')"))
        async with db.session() as session:
            found = await ProjectRepository(session).get_by_id(7)
            return [found.name, await ProjectRepository(session).get_by_id(8)]
    finally:
        await db.dispose()

print(json.dumps(asyncio.run(main())))
"""


def test_creating_a_new_table_folder_per_table_as_the_guide_shows(guide_project):
    project = guide_project
    project.write("src/db/projects/__init__.py", "")
    project.write("src/db/projects/model.py", PROJECT_MODEL)
    project.write("src/db/projects/repository.py", PROJECT_REPOSITORY)
    # step 4: env.py imports the model so that autogenerate sees it
    project.edit(
        "alembic/env.py",
        "from src.db.calls.model import Call  # noqa: F401",
        "from src.db.calls.model import Call  # noqa: F401\n"
        "from src.db.projects.model import Project  # noqa: F401",
    )
    project.run("revision", "--autogenerate", "-m", "Create projects table")
    path = project.generated("create_projects_table")
    assert down_revision(path) == HEAD
    assert operations(path) == {
        "upgrade": [
            "op.create_table('projects', sa.Column('id', sa.Integer(), nullable=False), "
            "sa.Column('name', sa.String(length=255), nullable=False), "
            "sa.PrimaryKeyConstraint('id'))"
        ],
        "downgrade": ["op.drop_table('projects')"],
    }
    project.run("upgrade")
    assert project.columns("projects") == ["id", "name"]
    assert project.python(USE_PROJECTS) == ["Apollo", None]
    project.run("downgrade", "-1")
    assert not project.db.table_exists("projects")


def test_adding_an_index_as_the_guide_shows(guide_project):
    project = guide_project
    project.edit(
        "src/db/calls/model.py",
        'Index("idx_user_active", "user_id", "is_active"),',
        'Index("idx_user_active", "user_id", "is_active"),\n'
        '                      Index("idx_phone_number", "phone_number"),',
    )
    project.run("revision", "--autogenerate", "-m", "Add phone number index")
    path = project.generated("add_phone_number_index")
    assert down_revision(path) == HEAD
    assert operations(path) == {
        "upgrade": ["op.create_index('idx_phone_number', 'calls', ['phone_number'], unique=False)"],
        "downgrade": ["op.drop_index('idx_phone_number', table_name='calls')"],
    }
    project.run("upgrade")
    indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'calls' ORDER BY indexname"
    assert project.db.query(indexes) == [
        ("calls_pkey",),
        ("idx_phone_number",),
        ("idx_user_active",),
    ]
    project.run("downgrade", "-1")
    assert project.db.query(indexes) == [("calls_pkey",), ("idx_user_active",)]


def npm(project: GuideProject, *args: str) -> subprocess.CompletedProcess[str]:
    # uv runs the scripts in this checkout's environment (the copy's own lock is the same):
    # what is under test is the scripts and the workflow, not a second install
    env = project.env | {"UV_PROJECT_ENVIRONMENT": sys.prefix, "UV_NO_SYNC": "1"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["npm", "run", "--silent", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_the_db_scripts_run_the_same_workflow_through_npm(tmp_path, database):
    project = GuideProject(tmp_path / "server", database)
    # the guide's "First Time Setup": migrate, then db:status "Should show: ba8c60a76780 (head)"
    npm(project, "db:migrate")
    assert npm(project, "db:status").stdout == f"{HEAD} (head)\n"
    add_duration_column(project)
    npm(project, "db:migrate:create", "--", "Add duration_seconds to calls")
    path = project.generated("add_duration_seconds_to_calls")
    review_duration_revision(path)
    new = path.name.split("_")[0]

    status = json.loads(npm(project, "db:status", "--", "--json").stdout)
    assert (status["revision"], status["heads"]) == ([HEAD], [new])
    npm(project, "db:migrate")
    assert database.version() == [new] and project.columns("calls")[-1] == "duration_seconds"
    history = json.loads(npm(project, "db:history", "--", "--json").stdout)
    assert [(r["revision"], r["applied"]) for r in history["revisions"]] == [
        (HEAD, True),
        (new, True),
    ]
    npm(project, "db:check")
    npm(project, "db:migrate:down")
    assert database.version() == [HEAD] and "duration_seconds" not in project.columns("calls")
    npm(project, "db:migrate")
    assert database.version() == [new]
