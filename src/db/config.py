"""The service's database settings: read once from the environment, validated once.

The same variables the team's guide and the migration runner use: ``DB_HOST DB_PORT DB_NAME
DB_USER DB_PASSWORD``, with ``DB_SSLMODE`` and ``DB_SSLROOTCERT`` (for RDS: ``verify-full`` and
the CA bundle, e.g. ``/certs/global-bundle.pem``). As for the runner, ``DATABASE_URL`` may name
the database instead, and ``DB_SECRET`` (the JSON of an RDS / Secrets Manager secret, as ECS
injects it) may fill what the others leave out; sources that are both given must agree. Pool
settings are ``DB_POOL_*``.

Nothing here connects anywhere. Every problem is a :class:`DatabaseConfigError` naming the
variable to fix; no message, ``repr`` or URL shown by this module ever carries the password.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

#: the async driver: psycopg 3 (already the runner's driver), so both speak libpq with the
#: same sslmode/sslrootcert semantics and the service needs no second PostgreSQL driver
DRIVER = "postgresql+psycopg"


class DatabaseConfigError(Exception):
    """A database setting is missing or invalid. ``str(err)`` names the variable(s) to fix."""


class DatabaseSettings(BaseSettings):
    """Every database setting the service reads, by environment variable (case-insensitive)."""

    # an empty variable (ECS can inject one) counts as unset, as for the runner
    model_config = SettingsConfigDict(
        env_prefix="DB_", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    host: str | None = Field(default=None, min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)
    name: str | None = Field(default=None, min_length=1)
    user: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    secret: SecretStr | None = None
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = (
        None
    )
    sslrootcert: Path | None = None

    #: connections kept open per process (ECS task); RDS max_connections is shared by all tasks
    pool_size: int = Field(default=5, ge=1)
    #: extra connections opened under load beyond ``pool_size``, closed when returned
    pool_max_overflow: int = Field(default=5, ge=0)
    #: seconds a request waits for a pooled connection before failing
    pool_timeout: float = Field(default=10.0, gt=0)
    #: seconds after which a pooled connection is replaced: shorter than any idle timeout
    #: between the task and RDS (NAT, RDS Proxy), and it spreads reconnects after a failover
    pool_recycle: int = Field(default=1800, ge=1)
    #: check a pooled connection before handing it out (a failover kills every connection)
    pool_pre_ping: bool = True
    #: seconds to wait for a new connection (libpq connect_timeout)
    connect_timeout: int = Field(default=5, ge=1)
    application_name: str = "service"

    @field_validator("sslmode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("sslrootcert")
    @classmethod
    def _cert_exists(cls, value: Path | None) -> Path | None:
        if value is not None and str(value) != "system" and not value.is_file():
            raise ValueError(
                f"no such file {str(value)!r} (for RDS, the CA bundle, "
                "e.g. /certs/global-bundle.pem)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: dict[str, object]) -> dict[str, object]:
        """Fill the fields DATABASE_URL and DB_SECRET give, before validation (so their values
        are validated as the DB_* variables are). Raises DatabaseConfigError on disagreement:
        pydantic lets it through as it is, and the message is ours (it never quotes a value)."""
        data = dict(data)
        origin = {field: f"DB_{field.upper()}" for field in _FILLED if data.get(field) is not None}
        for source, key, parse in (
            ("DATABASE_URL", "DATABASE_URL", _url_fields),
            ("DB_SECRET", "secret", _secret_fields),
        ):
            if data.get(key) is None:
                continue
            for field, value in parse(_plain(data[key])).items():
                if field not in origin:
                    data[field], origin[field] = value, source
                elif _plain(data[field]) != str(value):
                    raise DatabaseConfigError(
                        f"{origin[field]} and {source} disagree on the {field}: give one of them"
                    )
        return data

    @model_validator(mode="after")
    def _complete(self) -> DatabaseSettings:
        missing = [f"DB_{f.upper()}" for f in ("host", "name", "user") if getattr(self, f) is None]
        if missing:
            raise DatabaseConfigError(
                f"no database configured: missing {', '.join(missing)} ({_EXPECTED})"
            )
        return self

    def url(self) -> URL:
        """The async SQLAlchemy URL. A ``URL`` hides its password when printed or logged;
        ``url().render_as_string(hide_password=False)`` is a secret."""
        query = {
            k: str(v)
            for k, v in (("sslmode", self.sslmode), ("sslrootcert", self.sslrootcert))
            if v is not None
        }
        return URL.create(
            DRIVER,
            username=self.user,
            password=self.password.get_secret_value() if self.password else None,
            host=self.host,
            port=self.port,
            database=self.name,
            query=query,
        )

    def engine_options(self) -> dict[str, object]:
        """Keyword arguments for ``create_async_engine`` besides the URL."""
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.pool_max_overflow,
            "pool_timeout": self.pool_timeout,
            "pool_recycle": self.pool_recycle,
            "pool_pre_ping": self.pool_pre_ping,
            "connect_args": {
                "connect_timeout": self.connect_timeout,
                "application_name": self.application_name,
            },
        }


def load_settings() -> DatabaseSettings:
    """Read and validate the environment once. Raises :class:`DatabaseConfigError`."""
    try:
        return DatabaseSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            name = "DB_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise DatabaseConfigError(
            f"invalid database settings: {'; '.join(problems)} ({_EXPECTED})"
        ) from None


_EXPECTED = (
    "the service reads DATABASE_URL, or DB_HOST, DB_NAME, DB_USER and DB_PASSWORD "
    "(or DB_SECRET), and optionally DB_PORT, DB_SSLMODE, DB_SSLROOTCERT"
)
#: the fields DATABASE_URL and DB_SECRET can give
_FILLED = ("host", "port", "name", "user", "password", "sslmode", "sslrootcert")
#: a secret's keys (as RDS and Secrets Manager name them) and the settings they fill
_SECRET_KEYS = {
    "host": "host",
    "port": "port",
    "dbname": "name",
    "username": "user",
    "password": "password",
}
_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_URL_SHAPE = "expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME, the password percent-encoded"


def _plain(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _url_fields(raw: str) -> dict[str, object]:
    """The settings in ``DATABASE_URL``. Messages never quote it (it holds the password)."""
    try:
        url = make_url(raw.strip())
        port = url.port
    except (ArgumentError, ValueError):
        raise DatabaseConfigError(f"DATABASE_URL is malformed ({_URL_SHAPE})") from None
    if url.drivername not in _SCHEMES:
        raise DatabaseConfigError(f"DATABASE_URL must start with postgresql:// ({_URL_SHAPE})")
    unknown = sorted(set(url.query) - {"sslmode", "sslrootcert"})
    if unknown:
        raise DatabaseConfigError(
            f"DATABASE_URL: the service reads only sslmode and sslrootcert "
            f"from the query, not {', '.join(unknown)}"
        )
    fields = {
        "host": url.host,
        "port": port,
        "name": url.database,
        "user": url.username,
        "password": url.password,
        **url.query,
    }
    return {field: value for field, value in fields.items() if value}


def _secret_fields(raw: str) -> dict[str, object]:
    """The settings in the JSON of ``DB_SECRET``. Messages never quote it."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DatabaseConfigError(
            "DB_SECRET is not a JSON object (expected the secret's JSON, "
            'e.g. {"username": "...", "password": "..."})'
        )
    return {
        field: str(data[key]) for key, field in _SECRET_KEYS.items() if data.get(key) is not None
    }
