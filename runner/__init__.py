"""migration-runner: apply Alembic migrations to PostgreSQL safely."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``from runner import backfill``, imported only when a revision asks for it (the
    no-op path never loads the execution)."""
    if name == "backfill":
        from runner.execution.backfill import backfill

        return backfill
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
