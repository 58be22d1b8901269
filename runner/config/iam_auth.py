"""IAM database authentication (``MIGRATION_IAM_AUTH=true``): the password of every
connection is a fresh RDS auth token, made from the task role's credentials.

A token lives 15 minutes and the wait for the database can outlive one, so a token is made
for each connection attempt, never kept. Making one is local signing (SigV4, no request to
AWS once the credentials are known).

Contract:
- boto3 comes with the ``aws`` extra and is imported only when IAM authentication is on.
- :func:`iam_sslmode` decides the SSL mode, pure: RDS accepts tokens over SSL only.
- A token is never logged and never part of an error message or a ``repr``.
- Every problem (no boto3, no region, no credentials, a password given as well) is a
  :class:`ConfigError` naming what to set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from runner.config.database_url import ConnectionSpec
from runner.errors import ConfigError
from runner.observe import redact

SSL_REQUIRED = ("require", "verify-ca", "verify-full")


def iam_sslmode(sslmode: str | None, sslrootcert: str | None, password_given: bool) -> str:
    """The SSL mode to use with IAM authentication: the one configured if it requires SSL;
    when none is configured, ``verify-full`` with a CA bundle, else ``require``."""
    if password_given:
        raise ConfigError(
            "MIGRATION_IAM_AUTH=true makes the password an IAM token: remove the "
            "password (DB_PASSWORD, DB_SECRET's password, or the one in DATABASE_URL)"
        )
    if sslmode is None:
        return "verify-full" if sslrootcert else "require"
    if sslmode not in SSL_REQUIRED:
        raise ConfigError(
            f"MIGRATION_IAM_AUTH=true needs SSL, but DB_SSLMODE is {sslmode!r}: use "
            "verify-full with DB_SSLROOTCERT=/certs/global-bundle.pem (or require)"
        )
    return sslmode


def with_iam(spec: ConnectionSpec, region: str | None) -> ConnectionSpec:
    """``spec`` with SSL required and a fresh token as the password of every connection."""
    sslmode = iam_sslmode(spec.sslmode, spec.sslrootcert, password_given=spec.password is not None)
    return dataclasses.replace(
        spec, sslmode=sslmode, password_source=TokenSource(spec.host, spec.port, spec.user, region)
    )


class TokenSource:
    """Makes an RDS IAM auth token for ``user`` at ``host:port`` each time it is called."""

    def __init__(
        self, host: str, port: int, user: str, region: str | None = None, session: Any = None
    ) -> None:
        try:
            import boto3  # the `aws` extra: only when IAM authentication is on
        except ImportError:
            raise ConfigError(
                "MIGRATION_IAM_AUTH=true needs boto3: install migration-runner[aws] "
                "(in the image: build with --build-arg EXTRAS=aws)"
            ) from None
        session = session or boto3.session.Session()
        region = region or session.region_name
        if not region:
            raise ConfigError(
                "MIGRATION_IAM_AUTH=true needs the AWS region: set AWS_REGION "
                "(ECS sets it) or MIGRATION_IAM_REGION"
            )
        self.host, self.port, self.user, self.region = host, port, user, region
        self._session = session
        self._client = session.client("rds", region_name=region)

    def __call__(self) -> str:
        from botocore.exceptions import BotoCoreError

        try:
            token = str(
                self._client.generate_db_auth_token(
                    DBHostname=self.host, Port=self.port, DBUsername=self.user, Region=self.region
                )
            )
        except BotoCoreError as exc:  # NoCredentialsError and friends: never carry a token
            raise ConfigError(
                f"cannot make an IAM database auth token ({type(exc).__name__}): give "
                "the task a role allowed rds-db:connect, or set AWS credentials"
            ) from None
        redact.learn(token)  # and every spelling of it: masked wherever it shows up
        credentials = self._session.get_credentials()  # what signed the token: secret too
        for part in (getattr(credentials, "access_key", None), getattr(credentials, "token", None)):
            redact.learn(part or "")
        return token

    def __repr__(self) -> str:
        return f"TokenSource({self.user}@{self.host}:{self.port}, region={self.region})"
