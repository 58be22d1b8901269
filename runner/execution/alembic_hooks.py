"""How the runner plugs into Alembic's environment: the defaults added to env.py's
``context.configure``, the check that Alembic's steps are the plan's, the step wrapper that
runs a hook before each revision, and the SQLAlchemy event hooks. Every private Alembic name
the runner uses is listed in :data:`PRIVATE_API` (a test fails loudly if one disappears).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.database.version_table import VersionTable
from runner.errors import ConfigError, PlanDiverged
from runner.plan import Plan

#: (module, class, attribute) of every private Alembic API the runner relies on
PRIVATE_API = (
    ("alembic.script.base", "ScriptDirectory", "_upgrade_revs"),
    ("alembic.script.base", "ScriptDirectory", "_downgrade_revs"),
    ("alembic.script.base", "ScriptDirectory", "_stamp_revs"),
    ("alembic.script.base", "ScriptDirectory", "_version_locations"),
    ("alembic.script.base", "Script", "_normalized_down_revisions"),
)


def alembic_steps(directory: Any, kind: str, destination: str, heads: Any) -> list[Any]:
    """Alembic's own step list for ``kind`` from ``heads`` to ``destination``."""
    if kind == "stamp":
        return list(directory._stamp_revs((destination,), heads))
    return list(getattr(directory, f"_{kind}_revs")(destination, heads))


def alembic_destination(plan: Plan, target: str) -> str:
    """The destination handed to Alembic: the plan's resolved target."""
    if not plan.target:
        return "base"
    return plan.target[0] if len(plan.target) == 1 else target


def check_steps(plan: Plan, found: list[Any]) -> list[Any]:
    """Alembic's steps in the plan's order; :class:`PlanDiverged` if they are others."""
    if plan.kind == "stamp":
        reached = sorted({rev for step in found for rev in step.to_revisions})
        if reached != sorted(plan.target) and (found or plan.current != plan.target):
            raise PlanDiverged(
                f"internal error: Alembic would stamp {reached or 'base'}, the plan "
                f"says {list(plan.target) or 'base'}; nothing was run. Please report "
                "this",
                planned=list(plan.target),
                alembic=reached,
            )
        return found
    by_id = {step.revision.revision: step for step in found}
    if sorted(by_id) != sorted(plan.steps) or len(by_id) != len(found):
        raise PlanDiverged(
            f"internal error: Alembic would run {[s.revision.revision for s in found]}"
            f", the plan says {list(plan.steps)}; nothing was run. Please report "
            "this",
            planned=list(plan.steps),
            alembic=[s.revision.revision for s in found],
        )
    return [by_id[rev] for rev in plan.steps]


def agree_with_alembic(directory: Any, plan: Plan, target: str) -> None:
    """Before anything is touched: :class:`ConfigError` unless Alembic, from the plan's
    current revisions, would run exactly the plan's steps (a target Alembic refuses, or
    reads otherwise, is refused here rather than half run)."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    destination = alembic_destination(plan, target)
    try:
        check_steps(plan, alembic_steps(directory, plan.kind, destination, plan.current))
    except (CommandError, RevisionError) as exc:
        raise ConfigError(
            f"{plan.kind} to {target!r}: Alembic refuses it from "
            f"{', '.join(plan.current) or 'base'} ({exc}); nothing was run"
        ) from None
    except PlanDiverged as diverged:
        raise ConfigError(
            f"{plan.kind} to {target!r} from {', '.join(plan.current) or 'base'}: Alembic "
            f"would run {diverged.fields['alembic']}, the runner's plan is "
            f"{diverged.fields['planned']}; refused, nothing was run. Give an explicit "
            "revision id as the target",
            **diverged.fields,
        ) from None


class StepWithHook:
    """Alembic's migration step, with ``before`` run just before the revision's function."""

    def __init__(self, step: Any, before: Callable[[Any], None]) -> None:
        self._step, self._before = step, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def __str__(self) -> str:
        return str(self._step)

    def should_delete_branch(self, heads: set[str]) -> bool:
        """Alembic's answer, without its walk over every ancestor when it is known: a
        downgrade step from the only head to exactly one revision never deletes the branch
        (that revision is what the version row becomes). Alembic computes it by collecting
        every ancestor of the target for every step, which made a downgrade of N revisions
        cost N^2/2 node visits (2 million at 2,000 revisions)."""
        step = self._step
        if (
            step.is_downgrade
            and len(step.to_revisions) == 1
            and set(heads) == {step.revision.revision}
        ):
            return False
        return bool(step.should_delete_branch(heads))

    @property
    def migration_fn(self) -> Callable[..., Any]:
        fn = self._step.migration_fn

        def run(**kw: Any) -> Any:
            self._before(self._step)
            return fn(**kw)

        return run


def listen(target: Any, listeners: dict[str, Callable[..., Any]]) -> None:
    """Hook a migration engine or connection: transaction starts (a new transaction begins
    only after the previous revision's commit succeeded), commits, autocommit switches, and
    every statement (a pending signal is raised there; the session's limits are set)."""
    from sqlalchemy import event

    for name, listener in listeners.items():
        event.listen(target, name, listener)


def _excluding(table_name: str, include_name: Any) -> Callable[..., bool]:
    """An autogenerate ``include_name`` that hides the ledger table, then asks env.py's own."""

    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table" and name == table_name:
            return False
        return include_name(name, type_, parent_names) if include_name else True

    return include


def with_runner_defaults(
    configure: Any,
    table: VersionTable,
    on_apply: Any,
    on_configure: Callable[[Any], None],
    ledger_name: str,
) -> Any:
    """env.py's ``context.configure`` with the runner's defaults: one transaction per
    revision, the configured version table (a different one is a :class:`ConfigError`), the
    ledger hidden from autogenerate, and ``on_apply`` after env.py's own callbacks."""

    def configure_with_defaults(**kw: Any) -> Any:
        kw.setdefault("transaction_per_migration", True)
        kw.setdefault("version_table", table.name)
        kw.setdefault("version_table_schema", table.schema)
        if (kw["version_table"], kw["version_table_schema"]) != (table.name, table.schema):
            raise ConfigError(
                f"env.py uses version table {kw['version_table_schema'] or ''}"
                f"{'.' if kw['version_table_schema'] else ''}{kw['version_table']} but the runner "
                f"is set to {table.schema + '.' if table.schema else ''}{table.name}: set "
                "MIGRATION_VERSION_TABLE / MIGRATION_VERSION_TABLE_SCHEMA to match env.py"
            )
        kw["include_name"] = _excluding(ledger_name, kw.get("include_name"))
        callbacks = kw.get("on_version_apply") or []
        kw["on_version_apply"] = [
            *(callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]),
            on_apply,
        ]
        on_configure(kw.get("connection"))
        return configure(**kw)

    return configure_with_defaults
