"""Run the project's env.py for one Alembic step over scripts already loaded.

``alembic.command.upgrade`` builds a new ``ScriptDirectory`` (and imports every revision file)
on each call; ``verify`` and ``lint`` call env.py a few times per revision, so they go
through here instead, with the :class:`~runner.scripts.load.Loaded` scripts of the run.
"""

from __future__ import annotations

from typing import Any

from runner.scripts.load import Loaded


def run_env(
    loaded: Loaded, kind: str, target: str, *, starting_rev: str | None = None, as_sql: bool = False
) -> None:
    """Run env.py to ``kind`` (``upgrade`` or ``downgrade``) to ``target``, online on
    whatever env.py connects to (``config.attributes["connection"]`` when set), or offline
    (``as_sql``) into ``config.output_buffer``. Raises what env.py or the revision raises."""
    from alembic.runtime.environment import EnvironmentContext

    directory = loaded.directory

    def steps(rev: Any, context: Any) -> Any:
        if kind == "upgrade":
            return directory._upgrade_revs(target, rev)
        return directory._downgrade_revs(target, rev)

    with EnvironmentContext(
        loaded.config,
        directory,
        fn=steps,
        as_sql=as_sql,
        starting_rev=starting_rev,
        destination_rev=target,
    ):
        loaded.run_env()
