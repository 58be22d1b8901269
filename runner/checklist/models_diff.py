"""The models check: Alembic's autogenerate at head, against env.py's ``target_metadata``,
each difference as a sentence."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from runner.scripts.load import Loaded

#: the arguments ``alembic revision --autogenerate`` would pass, minus writing a file
_REVISION_ARGS = {
    "message": None,
    "autogenerate": True,
    "sql": False,
    "head": "head",
    "splice": False,
    "branch_label": None,
    "version_path": None,
    "rev_id": None,
    "depends_on": None,
}


@dataclasses.dataclass(frozen=True)
class Compared:
    #: each difference, described
    differences: list[str]
    #: env.py's ``target_metadata`` (a MetaData, or a list of them)
    metadata: Any


def compare_models(loaded: Loaded) -> Compared | None:
    """The differences between the database env.py connects to (at head) and env.py's
    ``target_metadata``; None when env.py sets no ``target_metadata``. Writes no file and
    changes nothing."""
    from alembic.autogenerate import RevisionContext
    from alembic.runtime.environment import EnvironmentContext
    from alembic.util import CommandError

    directory = loaded.directory
    context = RevisionContext(loaded.config, directory, dict(_REVISION_ARGS))

    seen: list[Any] = []

    def compare(rev: Any, env: Any) -> list[Any]:
        seen.append(env.opts.get("target_metadata"))
        context.run_autogenerate(rev, env)
        return []

    try:
        with EnvironmentContext(
            loaded.config,
            directory,
            fn=compare,
            as_sql=False,
            template_args=context.template_args,
            revision_context=context,
        ):
            loaded.run_env()
    except CommandError as exc:
        if "MetaData" not in str(exc):  # Alembic's "does not provide a MetaData object"
            raise
        return None
    upgrade_ops = context.generated_revisions[-1].upgrade_ops
    return Compared(
        []
        if upgrade_ops is None
        else [describe_model_diff(d) for d in _flatten(upgrade_ops.as_diffs())],
        seen[-1] if seen else None,
    )


def _flatten(diffs: list[Any]) -> Iterator[tuple[Any, ...]]:
    for item in diffs:
        if isinstance(item, list):  # modify_* diffs of one column come grouped
            yield from item
        else:
            yield item


def describe_model_diff(diff: tuple[Any, ...]) -> str:
    """One of autogenerate's diff tuples as a sentence. Pure."""
    verb, _, kind = diff[0].partition("_")
    where = {"add": "in the models only", "remove": "in the migrations only"}
    if verb in where and kind == "table":
        return f"table {diff[1].name} {where[verb]}"
    if verb in where and kind == "column":
        return f"column {diff[2]}.{diff[3].name} {where[verb]}"
    if verb in where and kind in ("index", "constraint", "fk"):
        obj = diff[1]
        table = getattr(getattr(obj, "table", None), "name", "?")
        return f"{kind} {obj.name or '(unnamed)'} on {table} {where[verb]}"
    if verb == "modify":
        table, column, old, new = diff[2], diff[3], diff[5], diff[6]
        return f"column {table}.{column} {kind}: {old!r} in the migrations, {new!r} in the models"
    return " ".join(str(part) for part in diff)
