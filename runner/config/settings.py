"""The runner's settings: read once from the environment, validated once, frozen, passed
down typed.

Where the database is comes either from ``DATABASE_URL`` or from the discrete ``DB_*``
variables the team already uses (optionally filled from ``DB_SECRET``, the JSON of an
RDS/Secrets Manager secret that ECS injects); the parsing is :mod:`runner.config.database_url`'s. The
connection is resolved once, when the settings are loaded: :meth:`Settings.connection_spec`
returns it, or raises the :class:`ConfigError` that resolving it raised (verbs that never
connect do not mind a bad DATABASE_URL).

Nothing here connects anywhere; every problem is a :class:`ConfigError` naming the
variable to fix, and no message ever carries a password.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import types
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from runner.config.database_url import (
    REDACTED,
    ConnectionSpec,
    parse_database_url,
    resolve_connection,
)
from runner.errors import ConfigError
from runner.limits import ESCALATING, MAX_TIMEOUT_S, LockSchedule, parse_schedule, steady
from runner.observe.redact import spellings

__all__ = ["ConnectionSpec", "Settings", "load_settings", "parse_database_url"]

#: ``package.module:callable`` (or ``module:object.method``)
CALLABLE_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class Settings(BaseSettings):
    """Every setting the runner reads, by its environment variable name (case-insensitive)."""

    # an empty variable (ECS can inject one) counts as unset
    model_config = SettingsConfigDict(
        extra="ignore", case_sensitive=False, env_ignore_empty=True, frozen=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment only: no ``env_file`` nor ``secrets_dir`` is configured, so the
        dotenv and secrets-directory sources could find nothing, yet walked every field (about
        a third of the settings' load time on every run)."""
        return init_settings, env_settings

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
    #: a project without alembic.ini (its configuration in code), or overriding the file's
    migration_script_location: str | None = Field(default=None, min_length=1)
    migration_version_locations: str | None = Field(default=None, min_length=1)
    #: ``module:callable`` run before the project's migration code is imported
    migration_bootstrap: str | None = None
    #: where env.py runs: the main thread (as `alembic upgrade`), a worker thread, or an
    #: AnyIO worker thread (env.py may then call anyio.from_thread.run)
    migration_env_py_thread: Literal["main", "worker", "anyio_worker"] = "main"
    migration_manifest: Path | None = None
    migration_target: str = Field(default="head", min_length=1)
    migration_db_wait_timeout: float = Field(default=60.0, ge=0)
    migration_connect_timeout: int = Field(default=5, ge=2, le=2147483647)
    migration_retry_max_interval: float = Field(default=5.0, gt=0)
    migration_lock_wait_timeout: float = Field(default=300.0, ge=0)
    migration_lock_name: str | None = Field(default=None, min_length=1)
    #: what DATABASE_URL/DB_HOST reaches: the database itself (a pooler or proxy is refused),
    #: or a pooler in session mode (runner.lock.pooler)
    migration_pooler: Literal["none", "session"] = "none"
    #: which lock_timeout each attempt at a blocked revision gets (see runner.limits):
    #: escalating (the default), steady, none, or a list such as 0.1*10,0.5*5,2
    migration_ddl_lock_schedule: str | None = Field(default=None, min_length=1)
    #: how long a blocked revision keeps trying, from its first blocked attempt
    migration_ddl_lock_budget: float = Field(default=300.0, gt=0)
    # the settings before the schedule: either one means the steady schedule with them.
    # PostgreSQL's range: a value beyond it would fail inside the first revision
    migration_ddl_lock_timeout: float | None = Field(default=None, ge=0, le=MAX_TIMEOUT_S)
    migration_ddl_lock_retries: int | None = Field(default=None, ge=1)
    migration_statement_timeout: float = Field(default=0.0, ge=0, le=MAX_TIMEOUT_S)
    #: seconds between revision.progress events while a revision runs (at least 1); 0: none
    migration_progress_interval: float = Field(default=30.0, ge=0)
    #: ``upgrade``'s phase when ``--phase`` is not given: expand (before the new code is
    #: live), contract (after); unset: every pending revision
    migration_phase: Literal["expand", "contract"] | None = None
    #: an RDS snapshot before a run that applies revisions (the ``aws`` extra)
    migration_snapshot: Literal["off", "instance", "cluster"] = "off"
    migration_snapshot_identifier: str | None = Field(default=None, min_length=1, max_length=63)
    migration_snapshot_timeout: float = Field(default=1800.0, gt=0)
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
    #: verify's own PostgreSQL: where its server binaries are unpacked (None: the default cache)
    migration_verify_cache_dir: Path | None = None
    migration_log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: set by ECS on every task; used to name the task in application_name and logs
    ecs_container_metadata_uri_v4: str | None = None
    #: the summary's CloudWatch metrics (EMF): namespace and dimensions
    migration_metrics_namespace: str = Field(
        default="MigrationRunner", min_length=1, max_length=255
    )
    migration_metrics_service: str | None = Field(default=None, max_length=1024)
    migration_metrics_environment: str | None = Field(default=None, max_length=1024)
    #: IAM database authentication: a fresh token as the password of each connection
    migration_iam_auth: bool = False
    migration_iam_region: str | None = None
    aws_region: str | None = None  # set by ECS

    @field_validator(
        "migration_log_format",
        "migration_log_level",
        "db_sslmode",
        "migration_env_py_thread",
        "migration_phase",
        "migration_snapshot",
        "migration_pooler",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("migration_bootstrap")
    @classmethod
    def _module_callable(cls, value: str | None) -> str | None:
        if value is not None and not CALLABLE_SPEC.match(value):
            raise ValueError(
                "expected module:callable, e.g. myapp.settings:configure (called with no "
                "arguments before the migrations load)"
            )
        return value

    _connection: ConnectionSpec | ConfigError | None = PrivateAttr(default=None)

    def connection_spec(self) -> ConnectionSpec:
        """Where the database is, resolved on first use only. Raises :class:`ConfigError`
        naming the variable."""
        if self._connection is None:
            try:
                self._connection = self._resolve_connection()
            except ConfigError as err:
                self._connection = err
        if isinstance(self._connection, ConfigError):
            raise self._connection
        return self._connection

    def _resolve_connection(self) -> ConnectionSpec:
        discrete = {
            "host": self.db_host,
            "port": self.db_port,
            "dbname": self.db_name,
            "user": self.db_user,
            "password": _secret(self.db_password),
        }
        spec = resolve_connection(_secret(self.database_url), discrete, _secret(self.db_secret))
        spec = _with_ssl(spec, self.db_sslmode, self.db_sslrootcert)
        if self.migration_iam_auth:
            from runner.config.iam_auth import with_iam  # boto3: only with IAM authentication

            spec = with_iam(spec, self.migration_iam_region or self.aws_region)
        return spec

    def lock_schedule(self) -> tuple[LockSchedule, float | None]:
        """The lock schedule and its budget in seconds (None: the attempts bound it). Without
        MIGRATION_DDL_LOCK_SCHEDULE, the settings that came before it (MIGRATION_DDL_LOCK_TIMEOUT,
        MIGRATION_DDL_LOCK_RETRIES) keep their meaning: the steady schedule, no budget."""
        legacy = (self.migration_ddl_lock_timeout, self.migration_ddl_lock_retries)
        if self.migration_ddl_lock_schedule is not None:
            source = "MIGRATION_DDL_LOCK_SCHEDULE"
            return (
                parse_schedule(self.migration_ddl_lock_schedule, source),
                self.migration_ddl_lock_budget,
            )
        if legacy == (None, None):
            return ESCALATING, self.migration_ddl_lock_budget
        timeout = 5.0 if legacy[0] is None else legacy[0]
        retries = 5 if legacy[1] is None else legacy[1]
        source = f"MIGRATION_DDL_LOCK_TIMEOUT={timeout:g} with MIGRATION_DDL_LOCK_RETRIES={retries}"
        return steady(timeout, retries, source), None

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
            found += self.connection_spec().secrets()
        except ConfigError:
            pass
        return sorted({s for secret in found for s in spellings(secret)}, key=len, reverse=True)

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
        raise ConfigError(
            "invalid settings: " + "; ".join(problems), settings=[p.split(":")[0] for p in problems]
        ) from None
    for name in (
        "migration_db_wait_timeout",
        "migration_lock_wait_timeout",
        "migration_retry_max_interval",
        "migration_ddl_lock_timeout",
        "migration_ddl_lock_budget",
        "migration_statement_timeout",
        "migration_progress_interval",
        "migration_snapshot_timeout",
    ):
        if not math.isfinite(getattr(settings, name) or 0):
            raise ConfigError(f"{name.upper()} must be a finite number of seconds")
    _check_lock_schedule(settings)
    if 0 < settings.migration_progress_interval < 1:
        raise ConfigError(
            "MIGRATION_PROGRESS_INTERVAL must be 0 (no progress events) or at least 1 second"
        )
    if settings.migration_env_py_thread == "anyio_worker" and not importlib.util.find_spec("anyio"):
        raise ConfigError(
            "MIGRATION_ENV_PY_THREAD=anyio_worker: anyio is not installed (install the "
            "project's dependencies, which include it, in the runner's environment)"
        )
    try:
        settings.connection_spec()  # resolved once, here; raised again where needed
    except ConfigError:
        pass
    return settings


METRICS_SETTINGS = (
    "migration_metrics_namespace",
    "migration_metrics_service",
    "migration_metrics_environment",
)


def metrics_settings() -> types.SimpleNamespace:
    """The summary's metric settings (``MIGRATION_METRICS_*``) read on their own, each one
    as :class:`Settings` validates it, or its default when invalid: for the summary of a run
    that could not read its settings (an invalid setting, a bad command line), whose failure
    must still reach the alarm that watches the service's dimensions."""
    values = {}
    for name in METRICS_SETTINGS:
        field = Settings.model_fields[name]
        definition: Any = (field.annotation, field)
        one = create_model(f"_{name}", __base__=_Lenient, **{name: definition})
        try:
            values[name] = getattr(one(), name)
        except ValidationError:
            values[name] = field.get_default()
    return types.SimpleNamespace(**values)


class _Lenient(BaseSettings):
    model_config = Settings.model_config


def _check_lock_schedule(settings: Settings) -> None:
    if settings.migration_ddl_lock_schedule is None:
        return
    if (settings.migration_ddl_lock_timeout, settings.migration_ddl_lock_retries) != (None, None):
        raise ConfigError(
            "MIGRATION_DDL_LOCK_SCHEDULE replaces MIGRATION_DDL_LOCK_TIMEOUT and "
            "MIGRATION_DDL_LOCK_RETRIES: give the schedule alone (steady keeps the old "
            "default; a list such as 5*5 spells any other)"
        )
    try:
        settings.lock_schedule()
    except ValueError as exc:
        raise ConfigError(f"MIGRATION_DDL_LOCK_SCHEDULE: {exc}") from None


def environment_secrets() -> list[str]:
    """The secret variables' raw values, whatever their shape: masked in what is logged
    before the settings are read (an invalid setting, a bad command line)."""
    env = {name.upper(): value for name, value in os.environ.items()}
    return [env[name] for name in ("DATABASE_URL", "DB_PASSWORD", "DB_SECRET") if env.get(name)]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _with_ssl(spec: ConnectionSpec, sslmode: str | None, rootcert: Path | None) -> ConnectionSpec:
    if sslmode and spec.sslmode and sslmode != spec.sslmode:
        raise ConfigError("DB_SSLMODE and the sslmode in DATABASE_URL disagree: give one")
    cert = str(rootcert) if rootcert else spec.sslrootcert
    if cert and cert != "system" and not Path(cert).is_file():
        raise ConfigError(
            f"DB_SSLROOTCERT (or sslrootcert in DATABASE_URL): no such file {cert!r} "
            "(for RDS, the CA bundle, e.g. /certs/global-bundle.pem)"
        )
    return dataclasses.replace(spec, sslmode=sslmode or spec.sslmode, sslrootcert=cert)
