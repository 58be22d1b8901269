"""Where the database is, from plain values: URL and secret parsing (pure)."""

from __future__ import annotations

import json

import pytest

from runner.config.database_url import parse_database_url, parse_secret, resolve_connection
from runner.errors import ConfigError

PW = "p@ss:w/rd%#?"


def test_url_with_encoded_special_characters_is_decoded():
    spec = parse_database_url(
        "postgresql+psycopg://app%40x:p%40ss%3Aw%2Frd%25%23%3F@db.example:6543/svc?sslmode=verify-full"
    )
    assert (spec.user, spec.password, spec.host, spec.port, spec.dbname) == (
        "app@x",
        PW,
        "db.example",
        6543,
        "svc",
    )
    assert spec.sslmode == "verify-full"
    assert spec.driver == "psycopg"


def test_plain_postgres_scheme_and_psycopg2_driver_are_recognised():
    assert parse_database_url("postgres://u@h/d").driver == "psycopg"
    assert parse_database_url("postgresql+psycopg2://u@h/d").driver == "psycopg2"
    assert parse_database_url("postgresql://u@h/d").port == 5432


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async"])
def test_async_drivers_are_recognised_and_kept_in_the_url_for_env_py(driver):
    spec = parse_database_url(f"postgresql+{driver}://u:p%40w@h:6543/d")
    assert (spec.driver, spec.password, spec.port) == (driver, "p@w", 6543)
    assert spec.url(hide_password=False) == f"postgresql+{driver}://u:p%40w@h:6543/d"


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://u:pw@h/d", "must start with postgresql://"),
        ("postgresql://u:pw@/d", "no host"),
        ("postgresql://u:pw@h", "no database name"),
        ("postgresql://:pw@h/d", "no user"),
        ("postgresql://u:pw@h:notaport/d", "port must be a number"),
        ("postgresql://u:pw@h/d?sslmode=sometimes", "sslmode must be one of"),
        ("postgresql://u:pw@h1:5432,h2:5432/d", "several hosts"),
        ("postgresql://u@h/d?password=pw", "not as ?password="),
        (
            "secretpw:pw",
            "must start with postgresql://",
        ),  # a bare secret: its "scheme" is not echoed
    ],
)
def test_malformed_url_is_refused_without_echoing_it(url, fragment):
    with pytest.raises(ConfigError) as err:
        parse_database_url(url)
    assert fragment in str(err.value)
    assert "pw" not in str(err.value).replace("postgresql://", "")


def test_a_secret_fills_the_gaps_of_the_discrete_values():
    secret = json.dumps(
        {"username": "app", "password": PW, "host": "h", "port": "6543", "dbname": "svc"}
    )
    spec = resolve_connection(None, {"host": None, "user": None}, secret)
    assert (spec.user, spec.password, spec.host, spec.port, spec.dbname) == (
        "app",
        PW,
        "h",
        6543,
        "svc",
    )


def test_a_secret_and_a_discrete_value_that_disagree_are_refused_by_name():
    with pytest.raises(ConfigError, match="DB_USER and DB_SECRET's 'user' disagree"):
        resolve_connection(None, {"user": "other"}, json.dumps({"username": "app"}))


def test_a_url_and_discrete_values_must_agree():
    assert resolve_connection("postgresql://u@h/d", {"host": "h"}, None).host == "h"
    with pytest.raises(ConfigError, match="DATABASE_URL and DB_HOST disagree"):
        resolve_connection("postgresql://u@h/d", {"host": "other"}, None)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"port": "x"}', "port is not a number"),
    ],
)
def test_a_bad_secret_is_refused_without_echoing_it(raw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_secret(raw)


def test_a_scheme_is_named_only_when_it_is_one():
    with pytest.raises(ConfigError) as err:
        parse_database_url("mysql://u:x@h/d")
    assert "got scheme 'mysql'" in str(err.value)


@pytest.mark.parametrize("port", [99999, 0, -1, "65536"])
def test_a_secret_with_a_port_out_of_range_is_refused(port):
    with pytest.raises(ConfigError, match="port must be a number from 1 to 65535"):
        parse_secret(json.dumps({"username": "u", "password": "x", "port": port}))
