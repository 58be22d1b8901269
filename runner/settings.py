"""The runner's settings: read once from the environment, validated once, passed down typed.

Where the database is comes either from ``DATABASE_URL`` or from the discrete ``DB_*``
variables the team already uses (optionally filled from ``DB_SECRET``, the JSON of an
RDS/Secrets Manager secret that ECS injects). Both may be given only if they agree.

Nothing here connects anywhere; every problem is a :class:`ConfigError` naming the
variable to fix, and no message ever carries a password.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runner.errors import ConfigError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
DRIVERS = {"postgresql": "psycopg", "postgres": "psycopg", "postgresql+psycopg": "psycopg",
           "postgresql+psycopg2": "psycopg2"}
DEFAULT_PORT = 5432
REDACTED = "***"


@dataclasses.dataclass(frozen=True)
class ConnectionSpec:
    """Where and how to connect. ``password`` never appears in ``repr`` or :meth:`redacted`."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = dataclasses.field(default=None, repr=False)
    sslmode: str | None = None
    sslrootcert: str | None = None
    #: the SQLAlchemy driver the URL named; the runner's own connection is always psycopg 3
    driver: str = "psycopg"
    #: further libpq parameters from the URL's query string (e.g. ``options``)
    params: tuple[tuple[str, str], ...] = ()

    def libpq_params(self) -> dict[str, str | int]:
        """Keyword arguments for ``psycopg.connect`` (password included: handle with care)."""
        out: dict[str, str | int] = dict(self.params)
        out.update(host=self.host, port=self.port, dbname=self.dbname, user=self.user)
        if self.password is not None:
            out["password"] = self.password
        if self.sslmode:
            out["sslmode"] = self.sslmode
        if self.sslrootcert:
            out["sslrootcert"] = self.sslrootcert
        return out

    def url(self, *, hide_password: bool = True) -> str:
        """A SQLAlchemy URL. With ``hide_password=False`` it is a secret: never log it."""
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + (REDACTED if hide_password else quote(self.password, safe=""))
        query = dict(self.params)
        if self.sslmode:
            query["sslmode"] = self.sslmode
        if self.sslrootcert:
            query["sslrootcert"] = self.sslrootcert
        qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"postgresql+{self.driver}://{auth}@{host}:{self.port}/{quote(self.dbname, safe='')}"
                + (f"?{qs}" if qs else ""))

    def redacted(self) -> str:
        return self.url(hide_password=True)


class Settings(BaseSettings):
    """Every setting the runner reads, by its environment variable name (case-insensitive)."""

    # an empty variable (ECS can inject one) counts as unset
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_ignore_empty=True)

    database_url: SecretStr | None = None
    db_host: str | None = None
    db_port: int | None = Field(default=None, ge=1, le=65535)
    db_name: str | None = None
    db_user: str | None = None
    db_password: SecretStr | None = None
    db_secret: SecretStr | None = None
    db_sslmode: SslMode | None = None
    db_sslrootcert: Path | None = None

    alembic_config: Path = Path("alembic.ini")
    migration_manifest: Path | None = None
    migration_target: str = Field(default="head", min_length=1)
    migration_db_wait_timeout: float = Field(default=60.0, ge=0)
    migration_connect_timeout: int = Field(default=5, ge=2)
    migration_retry_max_interval: float = Field(default=5.0, gt=0)
    migration_lock_wait_timeout: float = Field(default=300.0, ge=0)
    migration_lock_name: str | None = Field(default=None, min_length=1)
    migration_ddl_lock_timeout: float = Field(default=5.0, ge=0)
    migration_statement_timeout: float = Field(default=0.0, ge=0)
    migration_ddl_lock_retries: int = Field(default=5, ge=1)
    migration_allow_database_ahead: bool = False
    migration_ledger_table: str = Field(default="migration_runner_ledger", min_length=1)
    migration_strict_checksums: bool = False
    migration_version_table: str = Field(default="alembic_version", min_length=1)
    migration_version_table_schema: str | None = Field(default=None, min_length=1)
    migration_log_format: Literal["auto", "json", "console"] = "auto"
    #: size-aware lint (check --lint, upgrade --dry-run): below both small limits a table is
    #: tiny, at or above either large limit it is big
    migration_lint_small_table_rows: int = Field(default=10_000, ge=0)
    migration_lint_small_table_bytes: int = Field(default=10 * 2**20, ge=0)
    migration_lint_large_table_rows: int = Field(default=1_000_000, ge=0)
    migration_lint_large_table_bytes: int = Field(default=2**30, ge=0)
    migration_log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: set by ECS on every task; used to name the task in application_name and logs
    ecs_container_metadata_uri_v4: str | None = None

    @field_validator("migration_log_format", "migration_log_level", "db_sslmode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def connection_spec(self) -> ConnectionSpec:
        """Resolve where the database is. Raises :class:`ConfigError` naming the variable."""
        discrete = _discrete_fields(self)
        if self.database_url is not None:
            spec = parse_database_url(self.database_url.get_secret_value())
            _check_agreement(spec, discrete)
        else:
            spec = _spec_from_discrete(discrete)
        return _with_ssl(spec, self.db_sslmode, self.db_sslrootcert)

    def lock_name(self) -> str:
        """The advisory-lock name: by default the version table's qualified name, so two
        services sharing a database with separate version tables never block each other."""
        if self.migration_lock_name:
            return self.migration_lock_name
        schema = self.migration_version_table_schema or "public"
        return f"alembic:{schema}.{self.migration_version_table}"

    def secrets(self) -> list[str]:
        """Every secret string these settings hold, for the log redactor."""
        found: list[str] = []
        for secret in (self.database_url, self.db_password, self.db_secret):
            if secret is not None and secret.get_secret_value():
                found.append(secret.get_secret_value())
        try:
            password = self.connection_spec().password
        except ConfigError:
            password = None
        if password:
            found += [password, quote(password, safe=""), quote(password)]
        return sorted(set(found), key=len, reverse=True)

    def redacted(self) -> dict[str, object]:
        """The settings as logged by the ``start`` event: secrets replaced, URL without password."""
        out: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = REDACTED
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        if self.database_url is not None:
            try:
                out["database_url"] = self.connection_spec().redacted()
            except ConfigError:
                out["database_url"] = REDACTED
        out["lock_name"] = self.lock_name()
        return out


def load_settings() -> Settings:
    """Read and validate the environment once. Raises :class:`ConfigError`."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems),
                          settings=[p.split(":")[0] for p in problems]) from None
    for name in ("migration_db_wait_timeout", "migration_lock_wait_timeout",
                 "migration_retry_max_interval", "migration_ddl_lock_timeout",
                 "migration_statement_timeout"):
        if not math.isfinite(getattr(settings, name)):
            raise ConfigError(f"{name.upper()} must be a finite number of seconds")
    return settings


def parse_database_url(url: str) -> ConnectionSpec:
    """Parse a ``postgresql[+driver]://user:password@host:port/dbname?params`` URL.

    Error messages name ``DATABASE_URL`` and never echo the URL (it holds the password).
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigError(f"DATABASE_URL is malformed ({_URL_SHAPE})") from None
    if "," in parts.netloc:
        raise ConfigError("DATABASE_URL with several hosts is not supported: name one writer endpoint")
    if parts.fragment or "@" in parts.path + parts.query or parts.netloc.count("@") > 1 or (
            "%" in parts.netloc and not _percent_encoded(parts.netloc)):
        raise ConfigError("DATABASE_URL is malformed: percent-encode special characters in the "
                          "password (@ : / % # ? become %40 %3A %2F %25 %23 %3F), or use DB_PASSWORD")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"DATABASE_URL is malformed: the port must be a number from 1 to 65535 "
                          f"({_URL_SHAPE})")
    scheme = parts.scheme.lower()
    if scheme not in DRIVERS:
        shown = scheme if scheme and len(scheme) < 40 else "?"
        raise ConfigError(f"DATABASE_URL must start with postgresql:// or postgresql+psycopg:// "
                          f"(got scheme {shown!r})")
    if not parts.hostname:
        raise ConfigError(f"DATABASE_URL has no host ({_URL_SHAPE})")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ConfigError("DATABASE_URL has no database name (expected .../DBNAME at the end)")
    if not parts.username:
        raise ConfigError(f"DATABASE_URL has no user ({_URL_SHAPE})")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    sslmode = params.pop("sslmode", None)
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ConfigError(f"DATABASE_URL sslmode must be one of {', '.join(SSL_MODES)}")
    sslrootcert = params.pop("sslrootcert", None)
    for forbidden in ("password", "host", "port", "dbname", "user"):
        if forbidden in params:
            raise ConfigError(f"DATABASE_URL: give {forbidden} in the URL itself, not as ?{forbidden}=")
    return ConnectionSpec(
        host=parts.hostname, port=DEFAULT_PORT if port is None else port, dbname=dbname,
        user=unquote(parts.username),
        password=unquote(parts.password) if parts.password is not None else None,
        sslmode=sslmode, sslrootcert=sslrootcert, driver=DRIVERS[scheme],
        params=tuple(sorted(params.items())),
    )


# Said in words: a URL with a user and password in it would be masked by the log redactor.
_URL_SHAPE = ("expected postgresql://, then the user, a colon and the percent-encoded password, "
              "@, the host, optionally :port, then /dbname")


def _percent_encoded(text: str) -> bool:
    """Every % in ``text`` starts a %XX escape."""
    return all(text[i + 1:i + 3].isalnum() and len(text[i + 1:i + 3]) == 2
               and all(c in "0123456789abcdefABCDEF" for c in text[i + 1:i + 3])
               for i, c in enumerate(text) if c == "%")


def _discrete_fields(settings: Settings) -> dict[str, object]:
    """DB_* values, with gaps filled from DB_SECRET (the JSON of an RDS-managed secret)."""
    fields: dict[str, object] = {
        "host": settings.db_host, "port": settings.db_port, "dbname": settings.db_name,
        "user": settings.db_user,
        "password": settings.db_password.get_secret_value() if settings.db_password else None,
    }
    if settings.db_secret is not None:
        secret = _parse_secret(settings.db_secret.get_secret_value())
        for key, value in secret.items():
            if fields[key] is None:
                fields[key] = value
            elif fields[key] != value:
                name = "DB_PASSWORD" if key == "password" else f"DB_{_DB_VAR[key]}"
                raise ConfigError(f"{name} and DB_SECRET's {key!r} disagree: give one of them")
    return {k: v for k, v in fields.items() if v is not None}


_DB_VAR = {"host": "HOST", "port": "PORT", "dbname": "NAME", "user": "USER", "password": "PASSWORD"}
_SECRET_KEYS = {"host": "host", "port": "port", "dbname": "dbname", "username": "user",
                "password": "password"}


def _parse_secret(raw: str) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError("DB_SECRET is not valid JSON (expected the secret's JSON, "
                          'e.g. {"username": "...", "password": "..."})') from None
    if not isinstance(data, dict):
        raise ConfigError("DB_SECRET must be a JSON object with username and password")
    out: dict[str, object] = {}
    for key, field in _SECRET_KEYS.items():
        if data.get(key) is not None:
            out[field] = str(data[key])
    if "port" in out:
        try:
            out["port"] = int(out["port"])  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ConfigError("DB_SECRET's port is not a number") from None
    return out


def _spec_from_discrete(fields: dict[str, object]) -> ConnectionSpec:
    missing = [f"DB_{_DB_VAR[k]}" for k in ("host", "dbname", "user") if k not in fields]
    if missing:
        raise ConfigError(
            "no database configured: set DATABASE_URL, or DB_HOST, DB_NAME and DB_USER "
            f"(with DB_PASSWORD and optionally DB_PORT); missing: {', '.join(missing)}",
            missing=missing)
    return ConnectionSpec(host=str(fields["host"]), port=int(fields.get("port", DEFAULT_PORT)),  # type: ignore[arg-type]
                          dbname=str(fields["dbname"]), user=str(fields["user"]),
                          password=fields.get("password"))  # type: ignore[arg-type]


def _check_agreement(spec: ConnectionSpec, discrete: dict[str, object]) -> None:
    for key, value in discrete.items():
        if getattr(spec, key) != value:
            name = "DB_PASSWORD" if key == "password" else f"DB_{_DB_VAR[key]}"
            raise ConfigError(f"DATABASE_URL and {name} disagree: set only one way of naming the "
                              "database (DATABASE_URL, or the DB_* variables)")


def _with_ssl(spec: ConnectionSpec, sslmode: str | None, rootcert: Path | None) -> ConnectionSpec:
    if sslmode and spec.sslmode and sslmode != spec.sslmode:
        raise ConfigError("DB_SSLMODE and the sslmode in DATABASE_URL disagree: give one")
    cert = str(rootcert) if rootcert else spec.sslrootcert
    if cert and cert != "system" and not Path(cert).is_file():
        raise ConfigError(f"DB_SSLROOTCERT (or sslrootcert in DATABASE_URL): no such file {cert!r} "
                          "(for RDS, the CA bundle, e.g. /certs/global-bundle.pem)")
    return dataclasses.replace(spec, sslmode=sslmode or spec.sslmode, sslrootcert=cert)
