"""migration-runner: apply Alembic migrations to PostgreSQL safely."""

__version__ = "0.1.0"
