"""What every bench script shares: one throwaway cluster, generated projects (Alembic
revisions with a manifest, and the same steps as SQL files for dbmate and node-pg-migrate),
the runtime virtualenv every runner figure is taken with (made as the image makes it), the
command each tool runs, whole-process timing with CPU time and peak RSS, machine facts, small
statistics, and the Markdown a scenario hands back.

A side-by-side scenario module has ``SIZES = {"smoke": {...}, "full": {...}}`` and
``run(bench, **size) -> Section``; :func:`standalone` runs one from the command line.
Nothing here asserts: a run that does the wrong thing raises :class:`Failed`. Everything
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
# devtools (the cluster, the generated projects) lives in the repository, not in a package:
# last on the path, so that an installed `runner` (the runtime venv's) is never shadowed
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from devtools.pgcluster import Cluster  # noqa: E402

# The shared-connection env.py: migrate on the runner's connection when it passes one, else
# (plain `alembic upgrade`) build an engine from the same settings the runner reads.
from devtools.projects import ENV_PY, age_files  # noqa: E402  (the same env.py the tests use)

REVISION_PY = '''\
"""bench step {index}"""
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT 1")


def downgrade():
    pass
'''


def write_project(
    root: Path,
    revisions: int,
    transaction_per_migration: bool | None = None,
    versions_of: Path | None = None,
) -> Path:
    """An Alembic project in ``root`` with a linear chain of ``revisions`` trivial revisions
    (each ``op.execute("SELECT 1")``); returns the path of its alembic.ini.
    ``transaction_per_migration``: what env.py passes to ``context.configure`` (None: nothing,
    so plain Alembic runs the whole upgrade in one transaction and the runner, by default,
    commits each revision; True: as the service's alembic/env.py; False: one transaction,
    for the runner too). ``versions_of``: use the revision files of that project (its
    alembic.ini) instead of writing new ones, so that env.py variants run the same files."""
    ini = root / "alembic.ini"
    (root / "migrations").mkdir(parents=True)
    env_py = (
        ENV_PY
        if transaction_per_migration is None
        else ENV_PY.replace(
            "target_metadata=None)",
            f"target_metadata=None, transaction_per_migration={transaction_per_migration})",
        )
    )
    (root / "migrations" / "env.py").write_text(env_py)
    if versions_of is not None:
        ini.write_text(
            "[alembic]\nscript_location = %(here)s/migrations\nversion_locations = "
            f"{versions_of.parent / 'migrations' / 'versions'}\n"
        )
        return ini
    versions = root / "migrations" / "versions"
    versions.mkdir()
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    down = None
    for index in range(1, revisions + 1):
        rev = f"b{index:011x}"
        (versions / f"{rev}_step_{index}.py").write_text(
            REVISION_PY.format(index=index, rev=rev, down=down)
        )
        down = rev
    return ini


def runner_env(database_url: str, alembic_config: Path | None = None) -> dict[str, str]:
    """The inherited environment without any DB_*/MIGRATION_*/ALEMBIC_* setting, plus ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "MIGRATION_", "ALEMBIC_"))
    }
    env["DATABASE_URL"] = database_url
    env["MIGRATION_LOG_FORMAT"] = "json"
    if alembic_config is not None:
        env["ALEMBIC_CONFIG"] = str(alembic_config)
    return env


def with_bytecode(env: dict[str, str], cache_dir: Path | None) -> dict[str, str]:
    """Control Python's bytecode cache for child processes without touching the repository
    or the virtualenv: with ``cache_dir``, .pyc files are read and written there only
    (PYTHONPYCACHEPREFIX), so the second run of a command imports from bytecode; with
    ``None``, an empty prefix and PYTHONDONTWRITEBYTECODE=1, so every run compiles every
    imported module from source (what happens when the inherited environment sets
    PYTHONDONTWRITEBYTECODE and no .pyc files were installed)."""
    env = dict(env)
    if cache_dir is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "bench-no-pyc-never-written")
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


# --- the runtime virtualenv: what every runner figure is taken with ---------------------------

#: how the image installs the runner (Dockerfile: `uv sync --locked --no-dev --no-editable`,
#: UV_COMPILE_BYTECODE=1): the runtime dependency set only, the runner an ordinary package
RUNTIME_SYNC = ("uv", "sync", "--locked", "--no-dev", "--no-editable", "--compile-bytecode")


@dataclasses.dataclass(frozen=True)
class RuntimeVenv:
    """A virtualenv made as the image makes it: its python, how long it took, what is in it."""

    path: Path
    extras: tuple[str, ...]
    seconds: float
    packages: int

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def describe(self) -> str:
        extras = "".join(f" --extra {e}" for e in self.extras)
        return (
            f"`{' '.join(RUNTIME_SYNC)}{extras}` into a temporary virtualenv "
            f"({self.packages} packages, built in {self.seconds:.0f} s)"
        )


def runtime_venv(where: Path, extras: Sequence[str] = ()) -> RuntimeVenv:
    """The runner's runtime virtualenv in ``where`` (made once: a second call with the same
    ``where`` finds it). ``extras``: optional dependency sets (``verify``), as the image's
    ``EXTRAS`` build argument. No development tool (ruff, mypy, rich...) is in it, so what
    the runner imports is what the image imports."""
    marker = where / ".bench-runtime"
    started = time.monotonic()
    if not marker.is_file():
        env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(where))
        env.pop("VIRTUAL_ENV", None)
        argv = [*RUNTIME_SYNC, "-q", *(f"--extra={extra}" for extra in extras)]
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise Failed(f"{' '.join(argv)} into {where} failed:\n{proc.stderr[-3000:]}")
        marker.write_text(f"{time.monotonic() - started:.1f}")
    site = next(where.glob("lib/python*/site-packages"))
    return RuntimeVenv(
        where, tuple(extras), float(marker.read_text()), sum(1 for _ in site.glob("*.dist-info"))
    )


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[tuple[Cluster, str]]:
    """A started cluster on 127.0.0.1 with a random password; always destroyed."""
    password = "bench-" + secrets.token_urlsafe(12)
    cluster = Cluster.create(password=password)
    try:
        cluster.start()
        yield cluster, password
    finally:
        cluster.destroy()


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def connect(cluster: Cluster, password: str, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit superuser session over TCP to 127.0.0.1."""
    return psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user="postgres",
        password=password,
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
        application_name="bench",
    )


def create_database(cluster: Cluster, password: str, name: str) -> None:
    with connect(cluster, password) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def machine(cluster: Cluster, password: str) -> list[str]:
    """nproc, CPU model, OS, Python and PostgreSQL versions, for the report's header."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with connect(cluster, password) as conn:
        row = conn.execute("SELECT version()").fetchone()
        pg = row[0] if row else "?"
    return [
        f"nproc:      {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        f"CPU:        {cpu}",
        f"OS:         {platform.platform()}",
        f"Python:     {platform.python_version()} ({sys.executable})",
        f"PostgreSQL: {pg}",
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def describe(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "p90": percentile(values, 90),
        "max": max(values),
    }


NPM_PACKAGES = ("dbmate@2.36.0", "node-pg-migrate@9.0.0", "pg@8")
PY = sys.executable


class Failed(RuntimeError):
    """A command did not do what the scenario needs (wrong outcome, exit code, state)."""


# --- results --------------------------------------------------------------------------------


@dataclasses.dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        out = [
            "| " + " | ".join(self.headers) + " |",
            "|" + "|".join("---" for _ in self.headers) + "|",
        ]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(out)


@dataclasses.dataclass
class Section:
    """One scenario's report: prose, tables, plots (file names next to RESULTS.md) and the
    targets with their verdicts."""

    title: str
    intro: list[str] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)
    targets: list[tuple[str, str, bool | None]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def target(self, name: str, measured: str, met: bool | None) -> None:
        self.targets.append((name, measured, met))

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        parts += [" ".join(self.intro), ""] if self.intro else []
        for table in self.tables:
            parts += [table.markdown(), ""]
        if self.targets:
            parts += [
                Table(
                    ["target", "measured", "verdict"],
                    [[n, m, verdict(met)] for n, m, met in self.targets],
                ).markdown(),
                "",
            ]
        parts += [f"![{Path(p).stem}]({p})" for p in self.plots]
        parts += [""] if self.plots else []
        parts += [f"- {n}" for n in self.notes]
        parts += ["", f"_{self.seconds:.0f} s_", ""]
        return "\n".join(parts)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


# --- whole processes ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
    tool: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclasses.dataclass
class Done:
    command: Command
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float
    started: float = 0.0  # time.time() when it was started
    ended: float = 0.0  # time.time() when it was reaped

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines of a runner's stdout."""
        found = []
        for line in self.stdout.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(event)
        return found

    def event(self, name: str) -> dict[str, Any]:
        return next((e for e in reversed(self.events()) if e.get("event") == name), {})

    def tail(self) -> str:
        return (
            f"{self.command.tool} exited {self.returncode}: {' '.join(self.command.argv)}\n"
            f"{self.stdout[-2500:]}\n{self.stderr[-2500:]}"
        )

    def last_error_line(self) -> str:
        """The line of output that says why it failed, shortened."""
        for text in (self.stderr, self.stdout):
            for line in reversed(text.strip().splitlines()):
                line = line.strip()
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("level") == "error":
                        return str(event.get("message") or event.get("event"))[:160]
                    continue
                if line and not line.startswith(("at ", "^", "File ", "~")):
                    return line[:160]
        return "(no output)"


# A process's peak RSS (ru_maxrss) includes what it had before exec: a child forked from
# the bench inherits the bench's resident set. So peak memory is measured through this shim,
# a small interpreter that forks the command and reports its child's ru_maxrss in a file.
RSS_SHIM = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


class Started:
    """A process started with its output going to files, reaped with ``os.wait4`` so that
    its own CPU time is known (not its peak RSS: see RSS_SHIM)."""

    def __init__(self, command: Command, scratch: Path) -> None:
        self.command = command
        scratch.mkdir(parents=True, exist_ok=True)
        self._out = (scratch / f"{os.getpid()}-{id(self)}.out").open("w+")
        self._err = (scratch / f"{os.getpid()}-{id(self)}.err").open("w+")
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            command.argv,
            env=command.env,
            cwd=command.cwd,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def reap(self, timeout: float) -> Done:
        timer = threading.Timer(timeout, self._kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(self.proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - self.t0
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        outputs = []
        for handle in (self._out, self._err):
            handle.seek(0)
            outputs.append(handle.read())
            handle.close()
            os.unlink(handle.name)
        return Done(
            self.command,
            seconds,
            self.proc.returncode,
            outputs[0],
            outputs[1],
            usage.ru_utime + usage.ru_stime,
            self.started,
            time.time(),
        )

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# --- the bench: cluster, projects, tools ----------------------------------------------------


def sql_steps(root: Path, revisions: int) -> tuple[Path, Path]:
    """The same trivial steps as SQL files: ``root/dbmate`` (``-- migrate:up`` files, each in
    its own transaction, dbmate's default) and ``root/npm`` (node-pg-migrate's
    ``-- Up Migration`` files). Version prefixes sort as the Alembic chain does."""
    dbmate, npm = root / "dbmate", root / "npm"
    dbmate.mkdir(parents=True)
    npm.mkdir(parents=True)
    for index in range(1, revisions + 1):
        (dbmate / f"{20200000000000 + index}_step_{index}.sql").write_text(
            f"-- migrate:up\n-- bench step {index}\nSELECT 1;\n\n-- migrate:down\n"
        )
        (npm / f"{1600000000000 + index}_step-{index}.sql").write_text(
            f"-- Up Migration\n-- bench step {index}\nSELECT 1;\n\n-- Down Migration\n"
        )
    return dbmate, npm


def head_of(revisions: int) -> str:
    return f"b{revisions:011x}"  # _common.write_project's naming


class Project:
    """``revisions`` generated steps for every tool, with the runner's manifest written as an
    image build writes it (files dated an hour back first, as a checkout's are)."""

    def __init__(self, bench: Bench, revisions: int) -> None:
        self.revisions = revisions
        root = bench.tmp / f"project-{revisions}"
        self.ini = write_project(root / "alembic", revisions)
        age_files(self.ini.parent / "migrations" / "versions", 3600)
        # the same revision files under env.py files that say how to use transactions
        self.per_revision_ini = write_project(
            root / "per-revision", revisions, True, versions_of=self.ini
        )
        self.one_tx_ini = write_project(root / "one-tx", revisions, False, versions_of=self.ini)
        self.dbmate_dir, self.npm_dir = sql_steps(root, revisions)
        self.root = root
        for ini in (self.ini, self.one_tx_ini):
            env = with_bytecode(runner_env("postgresql://unused@127.0.0.1/x", ini), bench.cache)
            done = bench.run(
                Command(
                    "runner manifest", [bench.python, "-m", "runner", "manifest"], env, bench.tmp
                )
            )
            if done.returncode != 0 or not (ini.parent / "migration-manifest.json").is_file():
                raise Failed("`runner manifest` failed:\n" + done.tail())

    def dbmate_upto(self, applied: int) -> Path:
        """A migrations directory with only the first ``applied`` SQL files (symlinks)."""
        path = self.root / f"dbmate-upto-{applied}"
        if not path.exists():
            path.mkdir()
            for file in sorted(self.dbmate_dir.iterdir())[:applied]:
                (path / file.name).symlink_to(file)
        return path


TOOLS = {
    "runner": "`python -m runner upgrade` (manifest present; commits each revision, its default)",
    "runner-dev": "the same, with the development environment's python (editable install, dev "
    "tools such as `rich` importable): for reference only",
    "runner-1tx": "the runner with an env.py passing `transaction_per_migration=False`",
    "alembic": "`alembic upgrade head` with Alembic's template env.py: one transaction",
    "alembic-per-rev": "`alembic upgrade head`, env.py with `transaction_per_migration=True`",
    "dbmate": f"`dbmate --no-dump-schema up` ({NPM_PACKAGES[0]}: the Go binary from "
    "`@dbmate/linux-x64`, run directly; a transaction per file)",
    "node-pg-migrate": f"`node-pg-migrate up` ({NPM_PACKAGES[1]}; defaults: advisory lock that "
    "fails followers, one transaction for the run)",
    "node-pg-migrate-wait": "`node-pg-migrate up --advisory-lock-mode wait`",
}
PEERS = ("dbmate", "node-pg-migrate", "node-pg-migrate-wait")


class Bench:
    """The shared state of one bench run: a cluster (max_connections raised for herds), a
    temporary directory, a bytecode cache (filled by warm-up runs, as the image's compiled
    bytecode), the peers (installed with npm on first use) and generated projects."""

    def __init__(self, cluster: Any, password: str, tmp: Path, timeout: float = 300.0) -> None:
        self._venvs: dict[tuple[str, ...], RuntimeVenv] = {}
        self.cluster = cluster
        self.password = password
        self.tmp = tmp
        self.cache = tmp / "pycache"
        self.scratch = tmp / "out"
        self.timeout = timeout
        self._projects: dict[int, Project] = {}
        self._npm: Path | None = None
        self.npm_note = ""
        #: a directory holding another version of the ``runner`` package (another checkout,
        #: or a prototype): the tool ``runner-b`` runs it, for A/B comparisons
        self.runner_b: Path | None = None

    def on(self, cluster: Any, password: str) -> Bench:
        """The same bench (bytecode cache, peers, projects) against another cluster."""
        other = Bench(cluster, password, self.tmp, self.timeout)
        other.cache, other._projects, other._venvs = self.cache, self._projects, self._venvs
        other._npm, other.npm_note = self.npm_modules(), self.npm_note
        return other

    # --- the runtime virtualenv ---
    def venv(self, extras: Sequence[str] = ()) -> RuntimeVenv:
        """The runtime virtualenv (with ``extras``), made on first use, once per bench run."""
        key = tuple(extras)
        if key not in self._venvs:
            name = "venv-" + ("-".join(key) or "runtime")
            self._venvs[key] = runtime_venv(self.tmp / name, key)
        return self._venvs[key]

    @property
    def python(self) -> str:
        """The runtime virtualenv's python: every runner and plain-Alembic figure's."""
        return self.venv().python

    def venv_lines(self) -> list[str]:
        """What ran what, for a report's header."""
        lines = [
            f"runner and plain Alembic: `python` of {venv.describe()}; the process's "
            "working directory is a temporary one, so the installed package is what runs"
            for key, venv in self._venvs.items()
            if not key
        ]
        lines += [
            f"with `--extra {','.join(key)}`: {venv.describe()}"
            for key, venv in self._venvs.items()
            if key
        ]
        return lines

    # --- databases ---
    def url(self, db: str, scheme: str = "postgresql+psycopg") -> str:
        return self.cluster.url(db).replace("postgresql+psycopg", scheme, 1)

    def create_db(self, name: str, template: str | None = None) -> str:
        with connect(self.cluster, self.password) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            like = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{like}')
        return name

    def drop_db(self, name: str) -> None:
        with connect(self.cluster, self.password) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def query(self, db: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with connect(self.cluster, self.password, db) as conn:
            return list(conn.execute(sql, params).fetchall())

    def applied(self, tool: str, db: str) -> int:
        """How many steps ``tool``'s own bookkeeping says ``db`` has (Alembic: the index of
        the one row's revision; minus the number of rows when there are several)."""
        table = {"dbmate": "schema_migrations"}.get(
            tool, "pgmigrations" if "node" in tool else "alembic_version"
        )
        if not self.query(db, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]:
            return 0
        if table != "alembic_version":
            return int(self.query(db, f"SELECT count(*) FROM {table}")[0][0])
        rows = self.query(db, "SELECT version_num FROM alembic_version")
        if len(rows) != 1:
            return -len(rows)
        return int(rows[0][0][1:], 16)

    # --- projects and peers ---
    def project(self, revisions: int) -> Project:
        if revisions not in self._projects:
            self._projects[revisions] = Project(self, revisions)
        return self._projects[revisions]

    def npm_modules(self) -> Path:
        """Install dbmate and node-pg-migrate (pinned) into the temporary directory once."""
        if self._npm is None:
            prefix = self.tmp / "npm"
            prefix.mkdir()
            started = time.monotonic()
            proc = subprocess.run(
                [
                    "npm",
                    "install",
                    "--prefix",
                    str(prefix),
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    *NPM_PACKAGES,
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode != 0:
                raise Failed(f"npm install {' '.join(NPM_PACKAGES)} failed:\n{proc.stderr[-3000:]}")
            self._npm = prefix / "node_modules"
            self.npm_note = (
                f"peers installed by the bench with npm into a temporary directory "
                f"({' '.join(NPM_PACKAGES)}; {time.monotonic() - started:.0f} s)"
            )
        return self._npm

    # --- commands ---
    def command(
        self, tool: str, project: Project, db: str, *, target: int | None = None, wait: bool = False
    ) -> Command:
        """What ``tool`` runs to bring ``db`` to ``target`` steps (default: all of them)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DB_", "DATABASE_URL", "MIGRATION_", "ALEMBIC_", "PG"))
        }
        rev = head_of(target) if target is not None else None
        if tool.startswith("runner") or tool.startswith("alembic"):
            ini = {
                "runner": project.ini,
                "runner-dev": project.ini,
                "runner-b": project.ini,
                "runner-1tx": project.one_tx_ini,
                "alembic": project.ini,
                "alembic-per-rev": project.per_revision_ini,
            }[tool]
            env = with_bytecode(runner_env(self.url(db), ini), self.cache)
            # the runtime virtualenv's python, but for the development environment's row
            python = PY if tool == "runner-dev" else self.python
            if tool.startswith("runner"):
                argv = [python, "-m", "runner", "upgrade"] + ([rev] if rev else [])
            else:
                argv = [python, "-m", "alembic", "-c", str(ini), "upgrade", rev or "head"]
            # `python -m` puts the working directory first on sys.path: a neutral one runs
            # the installed package; runner-b's directory, the runner package in it; the
            # repository (the development environment), its source (installed editable)
            cwd = {"runner-b": self.runner_b or self.tmp, "runner-dev": ROOT}.get(tool, self.tmp)
            return Command(tool, argv, env, cwd)
        modules = self.npm_modules()
        url = self.url(db, "postgresql")
        if tool == "dbmate":
            folder = project.dbmate_dir if target is None else project.dbmate_upto(target)
            # the Go binary itself, not the npm package's node wrapper that starts it
            arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
            argv = [
                str(modules / "@dbmate" / f"linux-{arch}" / "bin" / "dbmate"),
                "--url",
                url + "?sslmode=disable",
                "--migrations-dir",
                str(folder),
                "--no-dump-schema",
                *(["--wait", "--wait-timeout", "120s"] if wait else []),
                "up",
            ]
            return Command(tool, argv, env, self.tmp)
        if tool.startswith("node-pg-migrate"):
            env["DATABASE_URL"] = url
            argv = [
                str(modules / ".bin" / "node-pg-migrate"),
                "up",
                *([str(target)] if target else []),
                "-m",
                str(project.npm_dir),
            ]
            if tool == "node-pg-migrate-wait":
                argv += ["--advisory-lock-mode", "wait"]
            return Command(tool, argv, env, self.tmp)
        raise ValueError(tool)

    def start(self, command: Command) -> Started:
        return Started(command, self.scratch)

    def run(self, command: Command) -> Done:
        return self.start(command).reap(self.timeout)

    def peak_rss(self, command: Command) -> tuple[Done, float]:
        """Run ``command`` through RSS_SHIM: its outcome and its own peak RSS in MB (the
        floor is the shim's resident set, a few MB: see :meth:`rss_floor`)."""
        report = self.scratch / f"rss-{os.getpid()}"
        shimmed = dataclasses.replace(
            command, argv=[PY, "-S", "-c", RSS_SHIM, str(report), *command.argv]
        )
        done = self.run(shimmed)
        done.command = command
        kb = int(report.read_text()) if report.exists() else 0
        report.unlink(missing_ok=True)
        return done, kb / 1024

    def rss_floor(self) -> float:
        """The peak RSS the shim itself passes on to what it runs (``true``)."""
        return self.peak_rss(Command("true", ["true"], dict(os.environ), self.tmp))[1]

    def migrate(self, tool: str, project: Project, db: str, target: int | None = None) -> Done:
        """Bring ``db`` to ``target`` steps with ``tool`` and check that it got there."""
        done = self.run(self.command(tool, project, db, target=target))
        want = project.revisions if target is None else target
        if done.returncode != 0 or self.applied(tool, db) != want:
            raise Failed(f"{tool} did not bring {db} to {want} steps:\n" + done.tail())
        return done

    def database_at(self, tool: str, project: Project, name: str, applied: int) -> str:
        """A fresh database with ``applied`` steps done by ``tool``'s own bookkeeping (the
        runner brings the Alembic-family ones there: same table, same revision)."""
        self.create_db(name)
        if applied:
            family = "runner" if tool.startswith(("runner", "alembic")) else tool
            self.migrate(family.replace("-wait", ""), project, name, applied)
        return name

    def expect_noop(self, done: Done) -> None:
        """A run on a database at head must succeed and apply nothing."""
        tool = done.command.tool
        text = done.stdout + done.stderr
        applied = {
            "runner": done.event("summary").get("outcome") != "up_to_date",
            "alembic": "Running upgrade" in text,
            "dbmate": "Applying:" in text,
            "node-pg-migrate": "No migrations to run" not in text,
        }
        family = next(k for k in applied if tool.startswith(k))
        if done.returncode != 0 or applied[family]:
            raise Failed(f"{tool} was expected to find nothing to do:\n" + done.tail())
        if family == "runner":
            loaded = [e for e in done.events() if e.get("event") == "scripts.loaded"]
            if [(e.get("source"), e.get("files_hashed")) for e in loaded] != [("manifest", 0)]:
                raise Failed(
                    "the runner's no-op did not use the manifest without hashing:\n" + done.tail()
                )


def rotated(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` starting at ``k`` (mod its length): A B C, B C A, C A B ..."""
    shift = k % len(items)
    return list(items[shift:]) + list(items[:shift])


def alternate(tools: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, tool) in A B C, B C A, C A B ... order: every tool goes first as often."""
    for r in range(rounds):
        for tool in rotated(tools, r):
            yield r, tool


# --- machine and plots ----------------------------------------------------------------------


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def busy_warning() -> str | None:
    """A warning when the machine was busy: load average above the number of cores."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        one = float(Path("/proc/loadavg").read_text().split()[0])
        cores = len(os.sched_getaffinity(0))
        if one > cores:
            return (
                f"**the machine was busy** (load average {one:.1f} on {cores} cores at the "
                "start): other work competed for the cores, so treat the figures as "
                "directional and run again on a quiet machine before quoting them"
            )
    return None


def machine_lines(bench: Bench) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = bench.query("postgres", "SHOW server_version")[0][0]
    bench.venv()  # made now, so that no scenario's time includes it
    return [
        f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {cpu}",
        f"PostgreSQL {pg} (throwaway cluster on 127.0.0.1, fsync off)",
        f"Python {sys.version.split()[0]}; load average at start: {loadavg()}",
        "bytecode: compiled, as in the image (a temporary PYTHONPYCACHEPREFIX filled by "
        "warm-up runs that are not counted)",
        *bench.venv_lines(),
        f"the development environment (`{PY}`, the runner installed editable, dev tools "
        "such as `rich` importable) runs only the rows named `(dev env)`, for reference; "
        "and the bench itself",
    ]


def plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list[float], list[float]]],
    logx: bool = False,
) -> str | None:
    """A line plot of ``series`` (label -> (xs, ys)) as PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


# --- running ----------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_session(timeout: float = 300.0) -> Iterator[Bench]:
    """A started throwaway cluster with room for herds of 100, and a temporary directory;
    both removed at the end."""
    with throwaway_cluster() as (cluster, password), temp_dir("bench-") as tmp:
        cluster.stop()
        cluster.start(max_connections="300")
        yield Bench(cluster, password, tmp, timeout)


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that it works, measures nothing"
    )
    group.add_argument(
        "--quick",
        action="store_true",
        help="the full sizes with fewer rounds: a first look, noisier",
    )


def profile_of(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def parse_size(text: str, like: Any) -> Any:
    """``text`` as the type of ``like``: a tuple of numbers, a bool, an int or a float."""
    if isinstance(like, tuple):
        return tuple(parse_size(part, like[0] if like else 0) for part in text.split(",") if part)
    if isinstance(like, bool):
        return text.lower() in ("1", "true", "yes", "on")
    return type(like)(text)


def standalone(
    module_doc: str, sizes: dict[str, dict[str, Any]], run: Callable[..., Section]
) -> int:
    """The command line of one scenario: ``--smoke`` for tiny sizes; prints the Markdown."""
    parser = argparse.ArgumentParser(description=module_doc.split("\n\n")[0])
    add_profile_options(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for plots (default: a temporary one, discarded)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one size, e.g. --set rounds=3 --set ns=1,10 "
        f"(keys: {', '.join(sizes['full'])})",
    )
    args = parser.parse_args()
    size = dict(sizes[profile_of(args)])
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in size:
            parser.error(f"unknown size {key!r}; known: {', '.join(size)}")
        size[key] = parse_size(value, size[key])
    with bench_session() as bench:
        out = args.out or bench.tmp
        out.mkdir(parents=True, exist_ok=True)
        print("\n".join("  " + line for line in machine_lines(bench)))
        started = time.monotonic()
        section = run(bench, out=out, **size)
        section.seconds = time.monotonic() - started
        print(section.markdown())
    return 0
