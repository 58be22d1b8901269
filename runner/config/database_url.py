"""Where the database is, from plain values: pure functions, no I/O, no driver.

:func:`parse_database_url` reads ``DATABASE_URL``; :func:`parse_secret` the JSON of an
RDS/Secrets Manager secret (``DB_SECRET``); :func:`resolve_connection` combines them with the
discrete ``DB_*`` values into one :class:`ConnectionSpec`. Every problem is a
:class:`ConfigError` naming the variable to fix; no message ever carries a password.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from runner.config.drivers import SCHEMES
from runner.errors import ConfigError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
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
    #: makes the password of each new connection (an IAM auth token); wins over ``password``
    password_source: Callable[[], str] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def current_password(self) -> str | None:
        """The password for a connection made now (a secret: never log it)."""
        return self.password_source() if self.password_source else self.password

    def libpq_params(self) -> dict[str, str | int]:
        """Keyword arguments for ``psycopg.connect`` (password included: handle with care)."""
        out: dict[str, str | int] = dict(self.params)
        out.update(host=self.host, port=self.port, dbname=self.dbname, user=self.user)
        password = self.current_password()
        if password is not None:
            out["password"] = password
        if self.sslmode:
            out["sslmode"] = self.sslmode
        if self.sslrootcert:
            out["sslrootcert"] = self.sslrootcert
        return out

    def url(self, *, hide_password: bool = True) -> str:
        """A SQLAlchemy URL. With ``hide_password=False`` it is a secret: never log it."""
        auth = quote(self.user, safe="")
        if self.password is not None or self.password_source is not None:
            auth += ":" + (
                REDACTED if hide_password else quote(self.current_password() or "", safe="")
            )
        query = {
            key: REDACTED if hide_password and is_secret_param(key) else value
            for key, value in self.params
        }
        if self.sslmode:
            query["sslmode"] = self.sslmode
        if self.sslrootcert:
            query["sslrootcert"] = self.sslrootcert
        qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"postgresql+{self.driver}://{auth}@{host}:{self.port}/{quote(self.dbname, safe='')}"
            + (f"?{qs}" if qs else "")
        )

    def redacted(self) -> str:
        return self.url(hide_password=True)

    def secrets(self) -> list[str]:
        """The password and every password-like parameter's value (e.g. ``sslpassword``)."""
        values = [value for key, value in self.params if is_secret_param(key)]
        return [v for v in (self.password, *values) if v]


def is_secret_param(key: str) -> bool:
    """A URL query parameter whose value is a secret (``sslpassword``, any ``*password``)."""
    return "password" in key.lower() or "passwd" in key.lower()


def parse_database_url(url: str) -> ConnectionSpec:
    """Parse a ``postgresql[+driver]://user:password@host:port/dbname?params`` URL.

    Error messages name ``DATABASE_URL`` and never echo the URL (it holds the password).
    """
    # urlsplit() takes no "_" in a scheme (postgresql+psycopg_async): split it off first
    named, sep, rest = url.strip().partition("://")
    try:
        parts = urlsplit(f"postgresql://{rest}" if sep else url.strip())
    except ValueError:
        raise ConfigError(f"DATABASE_URL is malformed ({_URL_SHAPE})") from None
    if "," in parts.netloc:
        raise ConfigError(
            "DATABASE_URL with several hosts is not supported: name one writer endpoint"
        )
    if (
        parts.fragment
        or "@" in parts.path + parts.query
        or parts.netloc.count("@") > 1
        or ("%" in parts.netloc and not _percent_encoded(parts.netloc))
    ):
        raise ConfigError(
            "DATABASE_URL is malformed: percent-encode special characters in the "
            "password (@ : / % # ? become %40 %3A %2F %25 %23 %3F), or use DB_PASSWORD"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(
            f"DATABASE_URL is malformed: the port must be a number from 1 to 65535 ({_URL_SHAPE})"
        )
    scheme = named.lower() if sep else parts.scheme.lower()
    if scheme not in SCHEMES:
        # a scheme is echoed only when it is one (``secret:word`` is not a URL: it may be the
        # password itself)
        shown = (
            f", got scheme {scheme!r}"
            if scheme and len(scheme) < 40 and url.strip().lower().startswith(scheme + "://")
            else ""
        )
        raise ConfigError(
            f"DATABASE_URL must start with postgresql:// or postgresql+DRIVER:// "
            f"(DRIVER: {', '.join(sorted(set(SCHEMES.values())))}{shown})"
        )
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
            raise ConfigError(
                f"DATABASE_URL: give {forbidden} in the URL itself, not as ?{forbidden}="
            )
    return ConnectionSpec(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        dbname=dbname,
        user=unquote(parts.username),
        password=unquote(parts.password) if parts.password is not None else None,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        driver=SCHEMES[scheme],
        params=tuple(sorted(params.items())),
    )


# Said in words: a URL with a user and password in it would be masked by the log redactor.
_URL_SHAPE = (
    "expected postgresql://, then the user, a colon and the percent-encoded password, "
    "@, the host, optionally :port, then /dbname"
)


def _percent_encoded(text: str) -> bool:
    """Every % in ``text`` starts a %XX escape."""
    return all(
        text[i + 1 : i + 3].isalnum()
        and len(text[i + 1 : i + 3]) == 2
        and all(c in "0123456789abcdefABCDEF" for c in text[i + 1 : i + 3])
        for i, c in enumerate(text)
        if c == "%"
    )


def resolve_connection(
    database_url: str | None, discrete: Mapping[str, object], secret: str | None
) -> ConnectionSpec:
    """The connection ``DATABASE_URL`` or the ``DB_*`` values (``discrete``: host, port,
    dbname, user, password; None for unset) name, gaps filled from ``DB_SECRET``'s JSON.
    Both ways may be given only if they agree."""
    fields = merge_secret(discrete, secret)
    if database_url is not None:
        spec = parse_database_url(database_url)
        _check_agreement(spec, fields)
        return spec
    return _spec_from_discrete(fields)


def merge_secret(discrete: Mapping[str, object], secret: str | None) -> dict[str, object]:
    """DB_* values, with gaps filled from DB_SECRET (the JSON of an RDS-managed secret)."""
    fields = dict(discrete)
    if secret is not None:
        for key, value in parse_secret(secret).items():
            if fields.get(key) is None:
                fields[key] = value
            elif fields[key] != value:
                name = "DB_PASSWORD" if key == "password" else f"DB_{_DB_VAR[key]}"
                raise ConfigError(f"{name} and DB_SECRET's {key!r} disagree: give one of them")
    return {k: v for k, v in fields.items() if v is not None}


_DB_VAR = {"host": "HOST", "port": "PORT", "dbname": "NAME", "user": "USER", "password": "PASSWORD"}
_SECRET_KEYS = {
    "host": "host",
    "port": "port",
    "dbname": "dbname",
    "username": "user",
    "password": "password",
}


def parse_secret(raw: str) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(
            "DB_SECRET is not valid JSON (expected the secret's JSON, "
            'e.g. {"username": "...", "password": "..."})'
        ) from None
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
        if not 1 <= out["port"] <= 65535:  # type: ignore[operator]
            raise ConfigError("DB_SECRET's port must be a number from 1 to 65535")
    return out


def _spec_from_discrete(fields: dict[str, object]) -> ConnectionSpec:
    missing = [f"DB_{_DB_VAR[k]}" for k in ("host", "dbname", "user") if k not in fields]
    if missing:
        raise ConfigError(
            "no database configured: set DATABASE_URL, or DB_HOST, DB_NAME and DB_USER "
            f"(with DB_PASSWORD and optionally DB_PORT); missing: {', '.join(missing)}",
            missing=missing,
        )
    return ConnectionSpec(
        host=str(fields["host"]),
        port=int(str(fields.get("port", DEFAULT_PORT))),
        dbname=str(fields["dbname"]),
        user=str(fields["user"]),
        password=None if fields.get("password") is None else str(fields["password"]),
    )


def _check_agreement(spec: ConnectionSpec, discrete: dict[str, object]) -> None:
    for key, value in discrete.items():
        if getattr(spec, key) != value:
            name = "DB_PASSWORD" if key == "password" else f"DB_{_DB_VAR[key]}"
            raise ConfigError(
                f"DATABASE_URL and {name} disagree: set only one way of naming the "
                "database (DATABASE_URL, or the DB_* variables)"
            )
