"""Alembic environment for the service's migrations.

Contract with migration-runner: when the runner calls us it passes its own connection in
``config.attributes["connection"]`` (holding the migration lock) and has set up logging;
we migrate on that connection and leave transactions and logging to it. Run directly
(``alembic upgrade head``, ``alembic revision --autogenerate``) we build our own connection
from the same settings the runner reads, and configure logging from alembic.ini.
"""

from logging.config import fileConfig

from sqlalchemy import create_engine, pool

from alembic import context
from src.db.calls.model import Call  # noqa: F401  (registers the table on Base.metadata)
from src.db.database import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    # `migration-runner sql` sets sqlalchemy.url (only its dialect matters: nothing connects)
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or _url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as own_connection:
        _migrate(own_connection)


def _include_name(name, type_, parent_names) -> bool:
    # migration-runner's audit ledger lives beside alembic_version; it is not a model
    return not (type_ == "table" and name == "migration_runner_ledger")


def _migrate(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from runner.config.settings import load_settings

    return load_settings().connection_spec().url(hide_password=False)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
