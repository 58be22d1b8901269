"""The service's database settings (src/db/config.py): the guide's DB_* variables, DB_SECRET as
ECS injects it, errors naming the variable, and never the password in any message or URL shown."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from src.db.config import DatabaseConfigError, load_settings
from tests.support.helpers import PASSWORD

BASE = {"DB_HOST": "db.example.internal", "DB_NAME": "maive", "DB_USER": "maive_app"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("DB_"):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def failure(env, **values: str) -> str:
    env(**values)
    with pytest.raises(DatabaseConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert PASSWORD not in message
    return message


def test_the_guides_variables_make_the_async_psycopg_url(env):
    env(
        **BASE,
        DB_PORT="6543",
        DB_PASSWORD=PASSWORD,
        DB_SSLMODE="VERIFY-FULL",
        DB_SSLROOTCERT=__file__,
    )
    url = load_settings().url()
    assert (url.drivername, url.host, url.port, url.database, url.username, url.password) == (
        "postgresql+psycopg",
        "db.example.internal",
        6543,
        "maive",
        "maive_app",
        PASSWORD,
    )
    assert dict(url.query) == {"sslmode": "verify-full", "sslrootcert": __file__}
    assert PASSWORD not in str(url) and PASSWORD not in repr(load_settings())


def test_pool_settings_suit_rds_behind_ecs_by_default(env):
    env(**BASE)
    assert load_settings().engine_options() == {
        "pool_size": 5,
        "max_overflow": 5,
        "pool_timeout": 10.0,
        "pool_recycle": 1800,
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": 5, "application_name": "service"},
    }


def test_db_secret_fills_what_the_db_variables_leave_out(env):
    env(
        DB_HOST="db.example.internal",
        DB_NAME="maive",
        DB_SECRET=json.dumps(
            {"username": "from_secret", "password": PASSWORD, "port": 6000, "engine": "postgres"}
        ),
    )
    settings = load_settings()
    assert (settings.user, settings.port, settings.url().password) == (
        "from_secret",
        6000,
        PASSWORD,
    )


def test_database_url_as_the_runner_takes_it_names_the_database_too(env):
    env(
        DATABASE_URL=f"postgresql+psycopg://maive_app:{quote(PASSWORD, safe='')}@db.example.internal"
        f":6543/maive?sslmode=verify-full",
        DB_NAME="maive",
    )
    url = load_settings().url()
    assert (url.host, url.port, url.database, url.username, url.password, dict(url.query)) == (
        "db.example.internal",
        6543,
        "maive",
        "maive_app",
        PASSWORD,
        {"sslmode": "verify-full"},
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://u:p@h/other",
            "DB_NAME and DATABASE_URL disagree on the name: give one of them",
        ),
        ("mysql://u:p@h/maive", "DATABASE_URL must start with postgresql://"),
        ("postgresql://u:p@h:notaport/maive", "DATABASE_URL is malformed"),
        (
            "postgresql://u:p@h/maive?options=-csearch_path%3Dx",
            "DATABASE_URL: the service reads only sslmode and sslrootcert from the query, not options",
        ),
        ("postgresql://u:p@h/maive?sslmode=sometimes", "invalid database settings: DB_SSLMODE: "),
    ],
)
def test_a_database_url_the_service_cannot_use_is_refused_without_quoting_it(env, url, message):
    secret = quote(PASSWORD, safe="")
    text = failure(env, DATABASE_URL=url.replace(":p@", f":{secret}@"), DB_NAME="maive")
    assert text.startswith(message), text
    assert secret not in text and "@h" not in text


def test_db_secret_and_a_db_variable_that_disagree_are_refused(env):
    message = failure(
        env, **BASE, DB_SECRET=json.dumps({"username": "other", "password": PASSWORD})
    )
    assert message == "DB_USER and DB_SECRET disagree on the user: give one of them"


def test_db_secret_that_is_not_json_is_refused_without_quoting_it(env):
    assert failure(env, **BASE, DB_SECRET=f"password={PASSWORD}").startswith(
        "DB_SECRET is not a JSON object"
    )


def test_nothing_configured_names_every_missing_variable(env):
    assert failure(env).startswith("no database configured: missing DB_HOST, DB_NAME, DB_USER (")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PORT", "99999"),
        ("DB_SSLMODE", "sometimes"),
        ("DB_POOL_SIZE", "0"),
        ("DB_SSLROOTCERT", "/nonexistent/bundle.pem"),
    ],
)
def test_an_invalid_setting_is_named(env, name, value):
    message = failure(env, **BASE, DB_PASSWORD=PASSWORD, **{name: value})
    assert message.startswith(f"invalid database settings: {name}: ")
