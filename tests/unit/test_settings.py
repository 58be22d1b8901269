"""Settings: where the database is, and every way of getting it wrong."""

from __future__ import annotations

import json

import pytest

from runner.config.settings import load_settings
from runner.errors import ConfigError

PW = "p@ss:w/rd%#?"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("DB_", "DATABASE_URL", "MIGRATION_", "ALEMBIC_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_discrete_variables_build_the_spec(clean_env):
    clean_env.setenv("DB_HOST", "rds.example")
    clean_env.setenv("DB_NAME", "maive")
    clean_env.setenv("DB_USER", "maive_app")
    clean_env.setenv("DB_PASSWORD", PW)
    spec = load_settings().connection_spec()
    assert (spec.host, spec.port, spec.dbname, spec.user, spec.password) == (
        "rds.example",
        5432,
        "maive",
        "maive_app",
        PW,
    )
    assert PW not in repr(spec) and PW not in spec.redacted()


def test_missing_discrete_variables_are_named(clean_env):
    clean_env.setenv("DB_HOST", "rds.example")
    with pytest.raises(ConfigError) as err:
        load_settings().connection_spec()
    assert "DB_NAME" in str(err.value) and "DB_USER" in str(err.value)
    assert "DATABASE_URL" in str(err.value)


def test_url_and_discrete_variables_must_agree(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://u:pw@h/d")
    clean_env.setenv("DB_HOST", "h")
    assert load_settings().connection_spec().host == "h"  # agreeing is fine
    clean_env.setenv("DB_HOST", "other")
    with pytest.raises(ConfigError, match="DATABASE_URL and DB_HOST disagree"):
        load_settings().connection_spec()


def test_non_numeric_port_names_the_variable(clean_env):
    clean_env.setenv("DB_PORT", "five-four-three-two")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "DB_PORT" in str(err.value)
    assert "five-four" not in str(err.value)


def test_unknown_sslmode_names_the_variable(clean_env):
    clean_env.setenv("DB_SSLMODE", "always")
    with pytest.raises(ConfigError, match="DB_SSLMODE"):
        load_settings()


def test_missing_root_certificate_is_a_config_error(clean_env, tmp_path):
    clean_env.setenv("DATABASE_URL", "postgresql://u:pw@h/d")
    clean_env.setenv("DB_SSLMODE", "verify-full")
    clean_env.setenv("DB_SSLROOTCERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="DB_SSLROOTCERT"):
        load_settings().connection_spec()
    (tmp_path / "missing.pem").write_text("cert")
    spec = load_settings().connection_spec()
    assert spec.libpq_params()["sslmode"] == "verify-full"
    assert spec.libpq_params()["sslrootcert"] == str(tmp_path / "missing.pem")


def test_ecs_injected_secret_fills_the_gaps(clean_env):
    clean_env.setenv("DB_HOST", "rds.example")
    clean_env.setenv("DB_NAME", "maive")
    clean_env.setenv(
        "DB_SECRET", json.dumps({"username": "maive_app", "password": PW, "port": "6432"})
    )
    settings = load_settings()
    spec = settings.connection_spec()
    assert (spec.user, spec.password, spec.port) == ("maive_app", PW, 6432)
    assert PW in settings.secrets()
    assert json.dumps(settings.redacted()).count(PW) == 0


def test_secret_disagreeing_with_a_variable_is_refused(clean_env):
    clean_env.setenv("DB_HOST", "h")
    clean_env.setenv("DB_NAME", "d")
    clean_env.setenv("DB_USER", "someone")
    clean_env.setenv("DB_SECRET", json.dumps({"username": "else", "password": "x"}))
    with pytest.raises(ConfigError, match="DB_USER and DB_SECRET"):
        load_settings().connection_spec()


def test_secret_that_is_not_json_is_refused_without_echo(clean_env):
    clean_env.setenv("DB_SECRET", "hunter2")
    with pytest.raises(ConfigError) as err:
        load_settings().connection_spec()
    assert "hunter2" not in str(err.value)


def test_redacted_settings_hold_no_secret(clean_env):
    clean_env.setenv(
        "DATABASE_URL",
        f"postgresql://u:{PW.replace('%', '%25').replace('@', '%40').replace('/', '%2F').replace('#', '%23').replace('?', '%3F').replace(':', '%3A')}@h/d",
    )
    settings = load_settings()
    shown = json.dumps(settings.redacted())
    for secret in settings.secrets():
        assert secret not in shown
    assert "postgresql+psycopg://u:***@h:5432/d" in shown


def test_lock_name_defaults_to_the_version_table_and_can_be_overridden(clean_env):
    assert load_settings().lock_name() == "alembic:public.alembic_version"
    clean_env.setenv("MIGRATION_VERSION_TABLE", "billing_version")
    clean_env.setenv("MIGRATION_VERSION_TABLE_SCHEMA", "billing")
    assert load_settings().lock_name() == "alembic:billing.billing_version"
    clean_env.setenv("MIGRATION_LOCK_NAME", "custom")
    assert load_settings().lock_name() == "custom"


def test_budgets_must_be_sane(clean_env):
    clean_env.setenv("MIGRATION_DB_WAIT_TIMEOUT", "-1")
    with pytest.raises(ConfigError, match="MIGRATION_DB_WAIT_TIMEOUT"):
        load_settings()
    clean_env.setenv("MIGRATION_DB_WAIT_TIMEOUT", "inf")
    with pytest.raises(ConfigError, match="MIGRATION_DB_WAIT_TIMEOUT"):
        load_settings()


def test_the_connection_is_resolved_once_when_the_settings_load(clean_env, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    clean_env.setenv("DATABASE_URL", "postgresql://u:pw@h/d")
    clean_env.setenv("DB_SSLROOTCERT", str(ca))
    settings = load_settings()
    ca.unlink()  # checked once, at load: not again at every use
    assert settings.connection_spec() is settings.connection_spec()
    assert settings.connection_spec().sslrootcert == str(ca)
    with pytest.raises(Exception, match="frozen"):
        settings.db_host = "elsewhere"


def test_a_bad_connection_is_raised_where_it_is_needed_not_at_load(clean_env):
    clean_env.setenv("DATABASE_URL", "mysql://u:pw@h/d")
    settings = load_settings()  # `heads` and `sql` never connect: they must still run
    for _ in range(2):
        with pytest.raises(ConfigError, match="must start with postgresql://"):
            settings.connection_spec()


def test_the_lock_schedule_is_escalating_by_default_with_a_budget(clean_env):
    schedule, budget = load_settings().lock_schedule()
    assert schedule.source == "MIGRATION_DDL_LOCK_SCHEDULE=escalating" and budget == 300.0
    clean_env.setenv("MIGRATION_DDL_LOCK_SCHEDULE", "0.1*5,1")
    clean_env.setenv("MIGRATION_DDL_LOCK_BUDGET", "20")
    schedule, budget = load_settings().lock_schedule()
    assert schedule.timeouts == (0.1,) * 5 + (1.0,) and budget == 20.0


def test_the_settings_before_the_schedule_keep_their_meaning(clean_env):
    clean_env.setenv("MIGRATION_DDL_LOCK_TIMEOUT", "2")
    schedule, budget = load_settings().lock_schedule()
    assert (schedule.timeouts, schedule.attempts, budget) == ((2.0,), 5, None)
    clean_env.setenv("MIGRATION_DDL_LOCK_RETRIES", "3")
    schedule, _ = load_settings().lock_schedule()
    assert (schedule.timeouts, schedule.attempts) == ((2.0,), 3)
    assert "MIGRATION_DDL_LOCK_RETRIES=3" in schedule.source


def test_the_schedule_and_the_settings_it_replaces_are_not_given_together(clean_env):
    clean_env.setenv("MIGRATION_DDL_LOCK_SCHEDULE", "steady")
    clean_env.setenv("MIGRATION_DDL_LOCK_TIMEOUT", "2")
    with pytest.raises(ConfigError, match="replaces MIGRATION_DDL_LOCK_TIMEOUT"):
        load_settings()


def test_a_misspelled_schedule_is_a_config_error_naming_the_variable(clean_env):
    clean_env.setenv("MIGRATION_DDL_LOCK_SCHEDULE", "fast")
    with pytest.raises(ConfigError, match="MIGRATION_DDL_LOCK_SCHEDULE: 'fast' is not a schedule"):
        load_settings()


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("1", True), ("30", True), ("0.2", False)])
def test_the_progress_interval_is_off_or_at_least_a_second(clean_env, value, ok):
    clean_env.setenv("MIGRATION_PROGRESS_INTERVAL", value)
    if ok:
        assert load_settings().migration_progress_interval == float(value)
    else:
        with pytest.raises(ConfigError, match="MIGRATION_PROGRESS_INTERVAL"):
            load_settings()


def test_bootstrap_must_name_a_module_and_a_callable(clean_env):
    for bad in ("configure", "my app:configure", "app:", ":configure", "app.settings:a b"):
        clean_env.setenv("MIGRATION_BOOTSTRAP", bad)
        with pytest.raises(ConfigError, match="MIGRATION_BOOTSTRAP: .*module:callable"):
            load_settings()
    clean_env.setenv("MIGRATION_BOOTSTRAP", "myapp.settings:Settings.configure")
    assert load_settings().migration_bootstrap == "myapp.settings:Settings.configure"


def test_env_py_thread_is_one_of_three_places(clean_env, monkeypatch):
    clean_env.setenv("MIGRATION_ENV_PY_THREAD", "fiber")
    with pytest.raises(ConfigError, match="MIGRATION_ENV_PY_THREAD"):
        load_settings()
    clean_env.setenv("MIGRATION_ENV_PY_THREAD", "AnyIO_Worker")
    assert load_settings().migration_env_py_thread == "anyio_worker"
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "anyio" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="anyio is not installed"):
        load_settings()


def test_the_pooler_is_none_or_session_and_transaction_mode_cannot_be_declared(clean_env):
    assert load_settings().migration_pooler == "none"
    clean_env.setenv("MIGRATION_POOLER", "Session")
    assert load_settings().migration_pooler == "session"
    clean_env.setenv("MIGRATION_POOLER", "transaction")
    with pytest.raises(ConfigError, match="MIGRATION_POOLER"):
        load_settings()
