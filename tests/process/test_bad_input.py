"""Misconfiguration, table-driven: every case is a real ``python -m runner upgrade`` process
against the real test PostgreSQL.

For every case: the documented exit code; exactly one ``error`` event whose message names
the setting to fix; a ``summary`` event last; no traceback; no secret anywhere in stdout or
stderr (in any form: raw, percent-encoded, JSON-escaped, or a recognisable piece of it);
and, when the run fails, the test database exactly as it was before.

Cases marked ``xfail(strict=True)`` assert the correct behaviour the runner does not have
yet; their reasons describe the bug.

Speed: the environment sets PYTHONDONTWRITEBYTECODE and the venv has no bytecode, so every
runner process would compile SQLAlchemy, Alembic and pydantic from source (0.8-2 s each).
The runner processes started here keep their bytecode under PYTHONPYCACHEPREFIX, outside
the project, which makes them 2-3 times faster without changing what they do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from psycopg import sql

from devtools.pgcluster import Cluster, ClusterError
from runner.errors import ExitCode
from tests.support.helpers import PASSWORD, Database, Project, Result, Server, run, runner_env
from tests.support.urls import pg_url

# --------------------------------------------------------------------------------------
# context and checks
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ctx:
    """What a case's settings are built from: the test database, its project, and (for
    cases that need one) a login role made for the case."""

    database: Database
    project: Project
    tmp: Path
    role: str = ""
    role_password: str = ""

    @property
    def server(self) -> Server:
        return self.database.server

    def url(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | str | None = None,
        query: str = "",
    ) -> str:
        """A correct, percent-encoded URL (the superuser's unless told otherwise)."""
        user = self.server.user if user is None else user
        password = self.server.password if password is None else password
        port = self.server.port if port is None else port
        return pg_url(
            user,
            password,
            self.server.host,
            port,
            self.database.name,
            scheme="postgresql",
            query=query,
        )

    def raw_url(self, user: str, password: str) -> str:
        """The same URL with the password pasted in as it is (not percent-encoded)."""
        return pg_url(
            user,
            password,
            self.server.host,
            self.server.port,
            self.database.name,
            scheme="postgresql",
            encode=False,
        )

    def discrete(self, *, as_role: bool = False, **override: str) -> dict[str, str]:
        """DB_* variables for the test database (the superuser's, or the case's role)."""
        env = {
            "DB_HOST": self.server.host,
            "DB_PORT": str(self.server.port),
            "DB_NAME": self.database.name,
            "DB_USER": self.role if as_role else self.server.user,
            "DB_PASSWORD": self.role_password if as_role else self.server.password,
        }
        env.update(override)
        return {k: v for k, v in env.items() if v is not None}


PYCACHE = Path(tempfile.gettempdir()) / f"migration-runner-test-pycache-{os.getuid()}"


def clean_env(**settings: str) -> dict[str, str]:
    """The helpers' runner environment without a database, minus libpq's own PG* variables
    (they would fill in whatever a case leaves out), with a bytecode cache (see above)."""
    env = {
        k: v
        for k, v in runner_env(None).items()
        if not k.startswith("PG") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(settings)
    return env


def secret_forms(secret: str) -> tuple[set[str], set[str]]:
    """Every spelling of ``secret`` a log line could carry, and its recognisable pieces
    (runs of 5+ word characters: a piece of a password echoed as a "host" is a leak too)."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(quote(secret, safe=""))[1:-1],
    }
    pieces = {piece.lower() for piece in re.findall(r"\w{5,}", secret)}
    return {f for f in forms if f}, pieces


def assert_no_secret(result: Result, secrets: tuple[str, ...]) -> None:
    raw = result.stdout + result.stderr
    decoded = raw  # plus the events with their \uXXXX escapes decoded
    for line in result.stdout.splitlines():
        with contextlib.suppress(ValueError):
            decoded += "\n" + json.dumps(json.loads(line), ensure_ascii=False)
    for secret in (PASSWORD, *secrets):
        forms, pieces = secret_forms(secret)
        for form in forms:
            assert form not in decoded, f"secret {secret!r} leaked as {form!r}:\n{raw}"
        lowered = decoded.lower()
        for piece in pieces:
            assert piece not in lowered, f"a piece of secret {secret!r} ({piece!r}) leaked:\n{raw}"


def assert_json_log(
    result: Result, *, traceback_allowed: bool = False, stderr_allowed: bool = False
) -> list[dict[str, Any]]:
    """Nothing on stderr (unless allowed), and the log contract (helpers.Result)."""
    if not stderr_allowed:
        assert result.stderr.strip() == "", f"unexpected stderr:\n{result.stderr}"
    return result.check_log_contract(traceback_allowed=traceback_allowed)


def snapshot(db: Database) -> dict[str, Any]:
    """Everything a run could have written: relations, schemas, the version table's rows."""
    relations = db.query(
        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1, 2"
    )
    schemas = db.query(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' ORDER BY 1"
    )
    return {"relations": relations, "schemas": schemas, "version": db.version()}


# --------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------

Names = tuple[str | tuple[str, ...], ...]  # each entry must appear; a tuple: any one of them


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    settings: Callable[[Ctx], dict[str, str]]
    code: ExitCode
    #: strings the error message must contain (the setting to fix, the offending value)
    names: Names = ()
    args: tuple[str, ...] = ("upgrade",)
    #: made-up secrets this case puts in the environment (never to be echoed)
    secrets: tuple[str, ...] = ()
    #: create a login role with this password for the case (``ctx.role``)
    role_password: str | None = None
    #: changes to the project or database before the run
    prepare: Callable[[Ctx], None] | None = None
    #: env variables to remove (e.g. the MIGRATION_LOG_FORMAT the helpers set)
    unset: tuple[str, ...] = ()
    #: a known runner bug: the case asserts the correct behaviour, marked xfail(strict)
    bug: str | None = None
    #: for exit 0: the summary's outcome ("migrated" means revision b1 applied, as the role)
    outcome: str = "migrated"

    @property
    def error_code(self) -> str:
        return {
            ExitCode.CONFIG: "config",
            ExitCode.REJECTED: "rejected",
            ExitCode.SCRIPTS_INVALID: "scripts_invalid",
            ExitCode.OK: "",
        }[self.code]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _no_versions_dir(ctx: Ctx) -> None:
    shutil.rmtree(ctx.project.versions)


def _empty_versions_dir(ctx: Ctx) -> None:
    for file in ctx.project.versions.iterdir():
        file.unlink()


def _unreadable_version_table(ctx: Ctx) -> None:
    """alembic_version owned by the superuser, and nothing granted to anyone else."""
    with ctx.database.connect() as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("REVOKE ALL ON alembic_version FROM PUBLIC")


BAD_INI = 'this is not an ini file\n{"json": true}\n'

# Made-up passwords: each carries a distinctive piece (5+ word characters) so that a piece
# echoed on its own (e.g. parsed as a host name) is caught too.
PW_DB_PASSWORD = "Xk9Dbpw@:/%#?Tq4Zr"
PW_URL_ENCODED = "Ue5Encod@:/%#?Rt8Yyq"
PW_URL_RAW = "Ab3Rawpw@:/%#?Ef5Ghk"
PW_URL_RAW_HOST = "Mv3Rawpw@Hx8Leak:/%#?Jp5Tail"

CASES: list[Case] = [
    # --- where the database is: missing ---------------------------------------------
    Case(
        "nothing-set",
        lambda c: {},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_HOST", "DB_NAME", "DB_USER"),
        unset=("MIGRATION_LOG_FORMAT",),
    ),
    Case(
        "only-DB_HOST",
        lambda c: {"DB_HOST": c.server.host},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_NAME", "DB_USER"),
    ),
    # --- malformed DATABASE_URL -----------------------------------------------------------
    Case(
        "url-wrong-scheme",
        lambda c: {"DATABASE_URL": "mysql://app:Wq3Scheme@db.example:3306/app"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "postgresql://"),
        secrets=("Wq3Scheme",),
    ),
    Case(
        "url-jdbc",
        lambda c: {
            "DATABASE_URL": "jdbc:postgresql://db.example:5432/app?user=app&password=Jd8Secret"
        },
        ExitCode.CONFIG,
        ("DATABASE_URL",),
        secrets=("Jd8Secret",),
    ),
    Case(
        "url-no-host",
        lambda c: {"DATABASE_URL": f"postgresql://app:Nh4Secret@/{c.database.name}"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "host"),
        secrets=("Nh4Secret",),
    ),
    Case(
        "url-port-not-numeric",
        lambda c: {"DATABASE_URL": f"postgresql://app:Pn5Secret@{c.server.host}:fivefour/db"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "port"),
        secrets=("Pn5Secret",),
    ),
    Case(
        "url-port-out-of-range",
        lambda c: {"DATABASE_URL": c.url(port=70000, password="Po6Secret")},
        ExitCode.CONFIG,
        ("DATABASE_URL", "port"),
        secrets=("Po6Secret",),
    ),
    Case(
        "url-port-zero",
        lambda c: {
            "DATABASE_URL": c.url(user="no_such_role_pz", password="Pz0Secret", port=0),
            "MIGRATION_DB_WAIT_TIMEOUT": "0",
            "MIGRATION_CONNECT_TIMEOUT": "2",
        },
        ExitCode.CONFIG,
        ("DATABASE_URL", "port"),
        secrets=("Pz0Secret",),
    ),
    Case(
        "url-garbage",
        lambda c: {"DATABASE_URL": "Gb6Garbage is not a url !!"},
        ExitCode.CONFIG,
        ("DATABASE_URL",),
        secrets=("Gb6Garbage",),
    ),
    Case("url-empty", lambda c: {"DATABASE_URL": ""}, ExitCode.CONFIG, ("DATABASE_URL",)),
    # --- DATABASE_URL and DB_* disagreeing ------------------------------------------------
    Case(
        "url-vs-DB_HOST",
        lambda c: {"DATABASE_URL": c.url(), "DB_HOST": "other-host.example"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_HOST"),
    ),
    Case(
        "url-vs-DB_PORT",
        lambda c: {"DATABASE_URL": c.url(), "DB_PORT": str(c.server.port + 1)},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_PORT"),
    ),
    Case(
        "url-vs-DB_NAME",
        lambda c: {"DATABASE_URL": c.url(), "DB_NAME": "other_db"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_NAME"),
    ),
    Case(
        "url-vs-DB_USER",
        lambda c: {"DATABASE_URL": c.url(), "DB_USER": "other_user"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_USER"),
    ),
    Case(
        "url-vs-DB_PASSWORD",
        lambda c: {"DATABASE_URL": c.url(), "DB_PASSWORD": "Dp7Otherpw"},
        ExitCode.CONFIG,
        ("DATABASE_URL", "DB_PASSWORD"),
        secrets=("Dp7Otherpw",),
    ),
    Case(
        "DB_SECRET-vs-DB_PASSWORD",
        lambda c: c.discrete(
            DB_PASSWORD="Sd2Pwfirst",
            DB_SECRET=json.dumps({"username": c.server.user, "password": "Sd3Pwsecond"}),
        ),
        ExitCode.CONFIG,
        ("DB_PASSWORD", "DB_SECRET"),
        secrets=("Sd2Pwfirst", "Sd3Pwsecond"),
    ),
    Case(
        "DB_SECRET-not-json",
        lambda c: c.discrete(DB_PASSWORD=None, DB_SECRET="Sj1Notjson-Qw4Rty"),
        ExitCode.CONFIG,
        ("DB_SECRET",),
        secrets=("Sj1Notjson-Qw4Rty",),
    ),
    Case(
        "DB_SECRET-numeric-password",
        lambda c: c.discrete(DB_PASSWORD=None, DB_SECRET='{"password": 73918264}'),
        ExitCode.REJECTED,
        ("DB_SECRET",),
        secrets=("73918264",),
    ),
    # --- SSL ------------------------------------------------------------------------------
    Case(
        "DB_SSLMODE-unknown",
        lambda c: {"DATABASE_URL": c.url(), "DB_SSLMODE": "sometimes"},
        ExitCode.CONFIG,
        ("DB_SSLMODE",),
    ),
    Case(
        "url-sslmode-unknown",
        lambda c: {"DATABASE_URL": c.url(query="sslmode=sometimes")},
        ExitCode.CONFIG,
        ("DATABASE_URL", "sslmode"),
    ),
    Case(
        "DB_SSLMODE-vs-url-sslmode",
        lambda c: {"DATABASE_URL": c.url(query="sslmode=require"), "DB_SSLMODE": "disable"},
        ExitCode.CONFIG,
        ("DB_SSLMODE", "DATABASE_URL"),
    ),
    Case(
        "DB_SSLROOTCERT-missing-file",
        lambda c: {
            "DATABASE_URL": c.url(),
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": str(c.tmp / "no-such-bundle.pem"),
        },
        ExitCode.CONFIG,
        ("DB_SSLROOTCERT", "no-such-bundle.pem"),
    ),
    Case(
        "url-sslrootcert-missing-file",
        lambda c: {
            "DATABASE_URL": c.url(
                query=f"sslmode=verify-full&sslrootcert={c.tmp}/no-such-bundle.pem"
            )
        },
        ExitCode.CONFIG,
        (("DATABASE_URL", "DB_SSLROOTCERT"), "no-such-bundle.pem"),
    ),
    # The test server has no SSL: libpq answers "server does not support SSL, but SSL was
    # required" before it ever looks for a root certificate (see the SSL server below).
    Case(
        "verify-full-without-root-cert",
        lambda c: {"DATABASE_URL": c.url(), "DB_SSLMODE": "verify-full"},
        ExitCode.REJECTED,
        (("DB_SSLMODE", "DB_SSLROOTCERT"),),
    ),
    Case(
        "url-sslmode-verify-full",
        lambda c: {"DATABASE_URL": c.url(query="sslmode=verify-full")},
        ExitCode.REJECTED,
        (("DB_SSLMODE", "sslmode"),),
    ),
    # --- ports ----------------------------------------------------------------------------
    Case(
        "DB_PORT-not-numeric",
        lambda c: c.discrete(DB_PORT="fivefour"),
        ExitCode.CONFIG,
        ("DB_PORT",),
    ),
    Case(
        "DB_PORT-out-of-range", lambda c: c.discrete(DB_PORT="70000"), ExitCode.CONFIG, ("DB_PORT",)
    ),
    Case("DB_PORT-zero", lambda c: c.discrete(DB_PORT="0"), ExitCode.CONFIG, ("DB_PORT",)),
    # --- target ---------------------------------------------------------------------------
    Case(
        "MIGRATION_TARGET-unknown",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_TARGET": "deadbeef0000"},
        ExitCode.CONFIG,
        ("MIGRATION_TARGET", "deadbeef0000"),
    ),
    Case(
        "cli-target-unknown",
        lambda c: {"DATABASE_URL": c.url()},
        ExitCode.CONFIG,
        (("MIGRATION_TARGET", "TARGET"), "deadbeef0000"),
        args=("upgrade", "deadbeef0000"),
    ),
    Case(
        "MIGRATION_TARGET-relative",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_TARGET": "+99"},
        ExitCode.CONFIG,
        ("MIGRATION_TARGET", "+99"),
    ),
    Case(
        "cli-target-relative",
        lambda c: {"DATABASE_URL": c.url()},
        ExitCode.CONFIG,
        (("MIGRATION_TARGET", "TARGET"), "+99"),
        args=("upgrade", "+99"),
    ),
    # an empty variable counts as unset (ECS can inject empty ones): the default, head, applies
    Case(
        "MIGRATION_TARGET-empty",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_TARGET": ""},
        ExitCode.OK,
    ),
    # --- the Alembic project ----------------------------------------------------------------
    Case(
        "ALEMBIC_CONFIG-missing-file",
        lambda c: {
            "DATABASE_URL": c.url(),
            "ALEMBIC_CONFIG": str(c.tmp / "nowhere" / "alembic.ini"),
        },
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG", "nowhere/alembic.ini"),
    ),
    Case(
        "ALEMBIC_CONFIG-is-a-directory",
        lambda c: {"DATABASE_URL": c.url(), "ALEMBIC_CONFIG": str(c.tmp)},
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG",),
    ),
    Case(
        "ini-without-script_location",
        lambda c: {
            "DATABASE_URL": c.url(),
            "ALEMBIC_CONFIG": str(_write(c.tmp / "noloc.ini", "[alembic]\nprepend_sys_path = .\n")),
        },
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG", "script_location"),
    ),
    Case(
        "ini-script_location-missing",
        lambda c: {
            "DATABASE_URL": c.url(),
            "ALEMBIC_CONFIG": str(
                _write(
                    c.tmp / "badloc.ini",
                    f"[alembic]\nscript_location = {c.tmp}/no-such-migrations\n",
                )
            ),
        },
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG", "no-such-migrations"),
    ),
    Case(
        "ini-not-an-ini-file",
        lambda c: {
            "DATABASE_URL": c.url(),
            "ALEMBIC_CONFIG": str(_write(c.tmp / "garbage.ini", BAD_INI)),
        },
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG",),
    ),
    Case(
        "ini-bad-interpolation",
        lambda c: {
            "DATABASE_URL": c.url(),
            "ALEMBIC_CONFIG": str(
                _write(c.tmp / "interp.ini", "[alembic]\nscript_location = %(nope)s/migrations\n")
            ),
        },
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG",),
    ),
    Case(
        "no-versions-directory",
        lambda c: {"DATABASE_URL": c.url()},
        ExitCode.CONFIG,
        (("ALEMBIC_CONFIG", "script_location"), "versions"),
        prepare=_no_versions_dir,
    ),
    Case(
        "script_location-is-a-file",
        lambda c: {
            "DATABASE_URL": c.url(),
            "ALEMBIC_CONFIG": str(
                _write(c.tmp / "locfile.ini", f"[alembic]\nscript_location = {c.project.ini}\n")
            ),
        },
        ExitCode.CONFIG,
        ("ALEMBIC_CONFIG", "script_location"),
    ),
    Case(
        "empty-versions-target-head",
        lambda c: {"DATABASE_URL": c.url()},
        ExitCode.SCRIPTS_INVALID,
        ("versions", "head"),
        prepare=_empty_versions_dir,
    ),
    Case(
        "empty-versions-target-heads",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_TARGET": "heads"},
        ExitCode.OK,
        prepare=_empty_versions_dir,
        outcome="up_to_date",
    ),
    # --- passwords ------------------------------------------------------------------------
    Case(
        "DB_PASSWORD-special-chars",
        lambda c: c.discrete(as_role=True),
        ExitCode.OK,
        role_password=PW_DB_PASSWORD,
    ),
    Case(
        "url-encoded-special-chars",
        lambda c: {"DATABASE_URL": c.url(user=c.role, password=c.role_password)},
        ExitCode.OK,
        role_password=PW_URL_ENCODED,
    ),
    Case(
        "url-unencoded-special-chars",
        lambda c: {
            "DATABASE_URL": c.raw_url(c.role, c.role_password),
            "MIGRATION_DB_WAIT_TIMEOUT": "1",
            "MIGRATION_CONNECT_TIMEOUT": "2",
        },
        ExitCode.CONFIG,
        ("DATABASE_URL",),
        role_password=PW_URL_RAW,
    ),
    Case(
        "url-unencoded-password-parsed-as-host",
        lambda c: {
            "DATABASE_URL": c.raw_url(c.role, c.role_password),
            "MIGRATION_DB_WAIT_TIMEOUT": "1",
            "MIGRATION_CONNECT_TIMEOUT": "2",
        },
        ExitCode.CONFIG,
        ("DATABASE_URL",),
        role_password=PW_URL_RAW_HOST,
    ),
    Case(
        "empty-DB_PASSWORD",
        lambda c: c.discrete(DB_PASSWORD=""),
        ExitCode.REJECTED,
        ("DB_PASSWORD",),
    ),
    Case(
        "wrong-DB_PASSWORD",
        lambda c: c.discrete(as_role=True, DB_PASSWORD="Wr6Wrongpw"),
        ExitCode.REJECTED,
        ("DB_PASSWORD",),
        secrets=("Wr6Wrongpw",),
        role_password="Wr7Rightpw",
    ),
    Case(
        "version-table-not-readable",
        lambda c: c.discrete(as_role=True),
        ExitCode.CONFIG,
        ("DB_USER", "alembic_version"),
        role_password="Vt3Readerpw",
        prepare=_unreadable_version_table,
    ),
    # --- budgets --------------------------------------------------------------------------
    Case(
        "MIGRATION_DB_WAIT_TIMEOUT-negative",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_DB_WAIT_TIMEOUT": "-1"},
        ExitCode.CONFIG,
        ("MIGRATION_DB_WAIT_TIMEOUT",),
    ),
    Case(
        "MIGRATION_DB_WAIT_TIMEOUT-inf",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_DB_WAIT_TIMEOUT": "inf"},
        ExitCode.CONFIG,
        ("MIGRATION_DB_WAIT_TIMEOUT",),
    ),
    Case(
        "MIGRATION_DB_WAIT_TIMEOUT-nan",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_DB_WAIT_TIMEOUT": "nan"},
        ExitCode.CONFIG,
        ("MIGRATION_DB_WAIT_TIMEOUT",),
    ),
    Case(
        "MIGRATION_LOCK_WAIT_TIMEOUT-inf",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_LOCK_WAIT_TIMEOUT": "inf"},
        ExitCode.CONFIG,
        ("MIGRATION_LOCK_WAIT_TIMEOUT",),
    ),
    # --- logging --------------------------------------------------------------------------
    Case(
        "MIGRATION_LOG_FORMAT-xml",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_LOG_FORMAT": "xml"},
        ExitCode.CONFIG,
        ("MIGRATION_LOG_FORMAT",),
    ),
    Case(
        "MIGRATION_LOG_LEVEL-verbose",
        lambda c: {"DATABASE_URL": c.url(), "MIGRATION_LOG_LEVEL": "verbose"},
        ExitCode.CONFIG,
        ("MIGRATION_LOG_LEVEL",),
    ),
]


def _params(cases: list[Case]) -> list[Any]:
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [],
        )
        for case in cases
    ]


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture
def project_with_a_table(project: Project) -> Project:
    """One revision that creates a table: a run that wrongly proceeds leaves traces."""
    project.revision("b1", None, "op.execute('CREATE TABLE bad_input_marker (id int)')")
    return project


@pytest.fixture
def make_role(server: Server) -> Iterator[Callable[..., str]]:
    """Create login roles (dropped afterwards, with whatever they own in the test database)."""
    made: list[tuple[str, Database]] = []

    def create(db: Database, password: str, name: str | None = None) -> str:
        name = name or f"bad_input_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(name), sql.Literal(password)
                    )
                )
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test server's role may not create roles")
        made.append((name, db))
        with as_admin(db) as conn:  # PostgreSQL 15+: public is not writable by default
            conn.execute(
                sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(name))
            )
            if server.user != name:  # the tests' role reads what the new role writes
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(
                        sql.Identifier(name), sql.Identifier(server.user)
                    )
                )
        return name

    def as_admin(db: Database) -> psycopg.Connection[Any]:
        return psycopg.connect(server.admin_conninfo, dbname=db.name, autocommit=True)

    yield create
    for name, db in made:
        with contextlib.suppress(psycopg.Error), as_admin(db) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


# --------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(CASES))
def test_misconfiguration(
    case: Case, database: Database, project_with_a_table: Project, make_role: Any, tmp_path: Path
) -> None:
    project = project_with_a_table
    ctx = Ctx(database, project, tmp_path)
    if case.role_password is not None:
        ctx.role, ctx.role_password = make_role(database, case.role_password), case.role_password
    if case.prepare:
        case.prepare(ctx)
    before = snapshot(database)
    env = clean_env(**case.settings(ctx))
    for name in case.unset:
        env.pop(name, None)

    # cwd = the project: without ALEMBIC_CONFIG the runner finds its alembic.ini there
    result = run(env, *case.args, cwd=project.root)

    secrets = case.secrets + ((case.role_password,) if case.role_password else ())
    assert_no_secret(result, secrets)
    events = assert_json_log(result)
    errors = [e for e in events if e["event"] == "error"]

    if case.code == ExitCode.OK:
        assert (result.code, errors) == (0, []), result.stdout
        assert events[-1]["outcome"] == case.outcome, result.stdout
        if case.outcome == "migrated":
            assert events[-1]["applied"] == ["b1"] and database.version() == ["b1"]
            owner = database.query(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'bad_input_marker'"
            )
            assert owner == [(ctx.role or database.server.user,)]
        else:
            assert snapshot(database) == before
        return
    assert snapshot(database) == before, "a failing run wrote to the database"
    assert len(errors) == 1, result.stdout
    error = errors[0]
    assert (result.code, error["error_code"], error["exit_code"]) == (
        case.code,
        case.error_code,
        case.code,
    ), result.stdout
    message = error["message"]
    for name in case.names:
        alternatives = name if isinstance(name, tuple) else (name,)
        assert any(alt in message for alt in alternatives), (
            f"the error message should name {' or '.join(alternatives)}: {message}"
        )
    assert events[-1]["outcome"] == "failed"


UNICODE_DOC = "créer la table « données » — 数据表 ✓"


def test_unicode_database_role_and_revision_message(
    server: Server, project: Project, make_role: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    dbname, password = f"tëst_数据_{suffix}", "Ünïcødé-Pw-数据库密码-Zr8"
    with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    db = Database(server, dbname)
    try:
        role = make_role(db, password, f"rôle_用户_{suffix}")
        (project.versions / "u1_unicode.py").write_text(
            f'"""{UNICODE_DOC}"""\nfrom alembic import op\n\nrevision = "u1"\ndown_revision = None\n'
            "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n"
            "    op.execute('CREATE TABLE \"données_数据\" (id int)')\n\n\ndef downgrade():\n    pass\n",
            encoding="utf-8",
        )
        ctx = Ctx(db, project, tmp_path, role, password)
        first = run(clean_env(**ctx.discrete(as_role=True)), cwd=project.root)
        again = run(clean_env(DATABASE_URL=ctx.url(user=role, password=password)), cwd=project.root)
        for result in (first, again):
            assert_no_secret(result, (password,))
            assert_json_log(result)
        assert (first.code, first.summary["outcome"], first.summary["applied"]) == (
            0,
            "migrated",
            ["u1"],
        ), first.stdout
        assert first.event("revision.applied")["message"] == UNICODE_DOC
        assert (again.code, again.summary["outcome"]) == (0, "up_to_date"), again.stdout
        assert db.version() == ["u1"]
        assert db.table_exists('"données_数据"')
    finally:
        with psycopg.connect(server.admin_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


# --- an SSL server: verify-full without a usable root certificate ---------------------------
# The test server has no SSL, so libpq stops at "server does not support SSL" before it looks
# at any root certificate. Here a server of this module's own has SSL, with a certificate
# for db.example.test signed by a throwaway CA.


@pytest.fixture(scope="module")
def ssl_server(request: pytest.FixtureRequest) -> Iterator[tuple[Server, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    try:
        template: Cluster = request.getfixturevalue("template_cluster")
        cluster = template.clone()
    except ClusterError as exc:
        pytest.skip(f"no local PostgreSQL cluster: {exc}")
    try:
        root = cluster.root
        for args in (
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=bad-input-ca",
                "-keyout",
                f"{root}/ca.key",
                "-out",
                f"{root}/ca.pem",
            ],
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=db.example.test",
                "-keyout",
                f"{root}/server.key",
                "-out",
                f"{root}/server.csr",
            ],
            [
                "x509",
                "-req",
                "-in",
                f"{root}/server.csr",
                "-CA",
                f"{root}/ca.pem",
                "-CAkey",
                f"{root}/ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                f"{root}/server.pem",
            ],
        ):
            subprocess.run(["openssl", *args], check=True, capture_output=True)
        if os.geteuid() == 0:  # the server runs as postgres and insists on owning its key
            import pwd

            owner = pwd.getpwnam("postgres")
            for name in ("server.key", "server.pem"):
                os.chown(root / name, owner.pw_uid, owner.pw_gid)
        os.chmod(root / "server.key", 0o600)
        cluster.start(
            ssl="on", ssl_cert_file=f"{root}/server.pem", ssl_key_file=f"{root}/server.key"
        )
        yield (
            Server(
                host="127.0.0.1",
                port=cluster.port,
                user="postgres",
                password=PASSWORD,
                admin_conninfo=cluster.conninfo(),
            ),
            root / "ca.pem",
        )
    finally:
        cluster.destroy()


SSL_CASES = [
    pytest.param({}, "root certificate file", ("DB_SSLROOTCERT",), id="verify-full-no-root-cert"),
    pytest.param(
        {"DB_SSLROOTCERT": "{empty}"},
        "could not read root certificate",
        ("DB_SSLROOTCERT",),
        id="verify-full-empty-root-cert",
    ),
    pytest.param(
        {"DB_SSLROOTCERT": "system"},
        "certificate verify failed",
        ("DB_SSLROOTCERT",),
        id="verify-full-wrong-ca",
    ),
    pytest.param(
        {"DB_SSLROOTCERT": "{ca}"},
        "does not match host name",
        ("DB_HOST",),
        id="verify-full-ip-instead-of-name",
    ),
]


@pytest.mark.parametrize("settings, libpq_says, names", SSL_CASES)
def test_verify_full_without_a_usable_root_cert_against_an_ssl_server(
    settings: dict[str, str],
    libpq_says: str,
    names: tuple[str, ...],
    ssl_server: tuple[Server, Path],
    tmp_path: Path,
) -> None:
    server, ca = ssl_server
    db = Database(server, "postgres")
    empty = _write(tmp_path / "empty.pem", "")
    env = clean_env(
        DB_HOST=server.host,
        DB_PORT=str(server.port),
        DB_NAME="postgres",
        DB_USER=server.user,
        DB_PASSWORD=server.password,
        DB_SSLMODE="verify-full",
        MIGRATION_DB_WAIT_TIMEOUT="0",
        **{k: v.format(empty=empty, ca=ca) for k, v in settings.items()},
    )
    before = snapshot(db)
    result = run(env, cwd=_project_with_a_table(tmp_path).root)

    assert_no_secret(result, ())
    events = assert_json_log(result)
    (error,) = [e for e in events if e["event"] == "error"]
    assert (result.code, error["error_code"]) == (ExitCode.REJECTED, "rejected"), result.stdout
    assert libpq_says in error["message"]
    for name in names:
        assert name in error["message"], error["message"]
    assert snapshot(db) == before


def _project_with_a_table(tmp_path: Path) -> Project:
    project = Project(tmp_path / "project")
    project.revision("b1", None, "op.execute('CREATE TABLE bad_input_marker (id int)')")
    return project


# --- the command line ------------------------------------------------------------------

BAD_COMMAND_LINES = [
    pytest.param(("frobnicate",), "invalid choice", id="unknown-command"),
    pytest.param(("upgrade", "--bogus"), "--bogus", id="unknown-flag"),
    pytest.param(("upgrade", "a1", "a2"), "unrecognized arguments: a2", id="two-targets"),
    pytest.param((), "required: COMMAND", id="no-command"),
]
URL_WITH_SECRET = "postgresql://app:Cl9Cmdline@db.example:5432/app"


@pytest.mark.parametrize("args, complaint", BAD_COMMAND_LINES)
def test_bad_command_line_ends_with_json_error_and_summary(
    args: tuple[str, ...], complaint: str, database: Database
) -> None:
    """A bad command line is reported like any failure: one error event and a summary on
    stdout (for CloudWatch), usage for people on stderr, exit 2, nothing touched."""
    before = snapshot(database)
    proc = _run_argv(args)
    events = assert_json_log(proc, stderr_allowed=True)
    (error,) = [e for e in events if e["event"] == "error"]
    assert (proc.code, error["error_code"]) == (ExitCode.CONFIG, "usage")
    assert complaint in error["message"]
    assert proc.stderr.startswith("usage: migration-runner"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_secret(proc, ("Cl9Cmdline",))
    assert snapshot(database) == before


def _run_argv(args: tuple[str, ...]) -> Result:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env=clean_env(DATABASE_URL=URL_WITH_SECRET),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
