"""The scratch database ``verify`` works on: one it is given, or a throwaway PostgreSQL of
its own (``devtools.pgcluster``, in a checkout of the repository only)."""

from __future__ import annotations

import contextlib
import importlib
import secrets
from collections.abc import Iterator
from typing import Any

from runner.errors import ConfigError, first_line


@contextlib.contextmanager
def connections(url: str) -> Iterator[tuple[Any, Any]]:
    """A psycopg session for snapshots and rows (autocommit), and a SQLAlchemy connection
    for env.py, both on ``url`` (a SQLAlchemy URL with the password). Raises
    :class:`ConfigError` when the database cannot be reached."""
    import psycopg
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    engine = create_engine(url, poolclass=NullPool)
    conninfo = psycopg.conninfo.make_conninfo(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        application_name="migration-runner verify",
    )
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConfigError(
            f"verify cannot connect to its scratch database: {first_line(exc)}"
        ) from None
    with conn, engine.connect() as sa_conn:
        yield conn, sa_conn
    engine.dispose()


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A PostgreSQL cluster of verify's own with an empty database; yields its SQLAlchemy
    URL; removed on exit. ``devtools`` is looked up by name, as the demo is: the runtime
    package has no import of it (a checked contract), and the image does not ship it."""
    import psycopg

    try:
        pgcluster = importlib.import_module("devtools.pgcluster")
    except ImportError:
        raise ConfigError(
            "verify starts its own PostgreSQL only from a checkout of the "
            "repository (devtools/); elsewhere give --database-url a scratch "
            "database"
        ) from None
    try:
        cluster = pgcluster.Cluster.create(password=secrets.token_urlsafe(16))
    except pgcluster.ClusterError as exc:
        raise ConfigError(f"verify cannot start PostgreSQL: {first_line(exc)}") from None
    try:
        cluster.start()
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "verify"')
        yield cluster.url("verify")
    finally:
        cluster.destroy()
