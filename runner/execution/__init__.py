"""Running one plan through Alembic on the locked connection."""
