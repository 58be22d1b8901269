"""The migration scripts, their manifest, and the seam to Alembic's script API."""
