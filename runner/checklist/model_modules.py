"""Model modules env.py never imports: a table declared in one is invisible to autogenerate
and to the models check, so its migration is never written (or a migration for it seems
to have no model).

The package searched is the one that holds ``target_metadata`` (the module defining the
MetaData, or the declarative base whose ``metadata`` it is): every module of that package
not imported yet is imported, and the tables it adds to the metadata are named. Modules
named like tests (``test_*``, ``*_test``, ``conftest``) and third-party packages are left
alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from runner.errors import first_line
from runner.observe import descriptors


@dataclasses.dataclass(frozen=True)
class Unimported:
    module: str
    path: str | None
    #: tables it declares on ``target_metadata``; empty with ``error`` when it fails to import
    tables: tuple[str, ...]
    error: str | None = None


def unimported_model_modules(metadata: Any) -> list[Unimported]:
    """The modules of ``metadata``'s package that env.py did not import and that add
    tables to it (or fail to import). Imports them: call once, after the models check."""
    metadatas = [m for m in (metadata if isinstance(metadata, (list, tuple)) else [metadata]) if m]

    def tables() -> set[str]:
        return {key for m in metadatas for key in m.tables}

    imported, before = set(sys.modules), tables()
    found: list[Unimported] = []
    for package in sorted({p for m in metadatas for p in holding_packages(m)}):
        for name in _submodules(package):  # walking imports the subpackages themselves
            if name in imported or name in sys.modules:
                continue
            try:
                with descriptors.captured():  # the project's module, importing
                    importlib.import_module(name)
            except Exception as exc:  # the project's module: whatever it raises is the finding
                found.append(Unimported(name, None, (), f"{type(exc).__name__}: {first_line(exc)}"))
    added = tables() - before
    for name in sorted(set(sys.modules) - imported):
        module = sys.modules[name]
        declared = sorted(added & _declared_tables(module))
        if declared:
            found.append(Unimported(name, getattr(module, "__file__", None), tuple(declared)))
            added -= set(declared)
    if added:  # declared somewhere no module-level name shows
        found.append(Unimported("?", None, tuple(sorted(added))))
    return found


def _declared_tables(module: Any) -> set[str]:
    """The keys of the tables ``module`` declares at its top level (``Table`` objects, or
    the ``__table__`` of classes it defines)."""
    from sqlalchemy import Table

    keys = set()
    for value in list(vars(module).values()):
        if isinstance(value, type):
            if value.__module__ != module.__name__:
                continue
            value = vars(value).get("__table__")
        if isinstance(value, Table):
            keys.add(value.key)
    return keys


def holding_packages(metadata: Any) -> set[str]:
    """The packages (dotted names) of the project modules that hold ``metadata`` at their
    top level, itself or as a declarative base's ``.metadata``."""
    third_party = tuple(
        str(Path(p).resolve())
        for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    )
    packages = set()
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        path = getattr(module, "__file__", None)
        if spec is None or not spec.parent or not path:
            continue
        if str(Path(path).resolve()).startswith(third_party):
            continue
        if any(_holds(value, metadata) for value in list(vars(module).values())):
            packages.add(spec.parent)
    return packages


def _holds(value: Any, metadata: Any) -> bool:
    if value is metadata:
        return True
    try:
        return isinstance(value, type) and vars(value).get("metadata") is metadata
    except TypeError:
        return False


def _submodules(package: str) -> list[str]:
    module = sys.modules.get(package) or importlib.import_module(package)
    names = []
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), package + "."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("test_") or leaf.endswith("_test") or leaf in ("conftest", "__main__"):
            continue
        names.append(info.name)
    return names
