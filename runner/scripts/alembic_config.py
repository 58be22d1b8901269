"""Finding a project's Alembic configuration as Alembic does: ``alembic.ini``, and since
Alembic 1.16 the ``[tool.alembic]`` table of ``pyproject.toml`` (the ``pyproject`` templates
keep ``script_location`` and the rest there, and only the URL and logging in alembic.ini).

``ALEMBIC_CONFIG`` names either file (Alembic's command line reads the same variable); the
other one is looked for beside it. Alembic's command line looks for the other in the working
directory instead: the same place when it is run from the project's directory, as it usually
is, and never a file of another project when it is not.

A project whose configuration lives in code ships neither: :class:`Project` then carries
``script_location`` (and ``version_locations``) from the settings (``MIGRATION_SCRIPT_LOCATION``,
``MIGRATION_VERSION_LOCATIONS``), which also override those of a file when both are given.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from runner.errors import ConfigError

INI = "alembic.ini"
PYPROJECT = "pyproject.toml"


@dataclasses.dataclass(frozen=True)
class Project:
    """Where a project's migrations are, as the settings say: ``config`` (ALEMBIC_CONFIG);
    ``script_location`` and ``version_locations`` (``MIGRATION_VERSION_LOCATIONS`` as
    given: :func:`split_locations` splits it once the file's ``path_separator`` is known)
    standing in for the file's, or for a file the project does not ship; ``bootstrap``, the
    ``module:callable`` run before any of the project's migration code is imported;
    ``env_py_thread``, where env.py runs (:mod:`runner.scripts.env_thread`)."""

    config: Path
    script_location: str | None = None
    version_locations: str | None = None
    bootstrap: str | None = None
    env_py_thread: str = "main"

    @classmethod
    def of(cls, where: Project | Path) -> Project:
        return where if isinstance(where, Project) else cls(Path(where))


#: Alembic's ``path_separator`` values, and what each splits on
PATH_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}


def split_locations(value: str | None, separator: str | None = None) -> tuple[str, ...]:
    """``MIGRATION_VERSION_LOCATIONS`` as a list, split as Alembic splits the file's own
    ``version_locations``: on ``separator`` (what the project's ``path_separator`` declares),
    else one location per line when the value has several lines, else on commas and
    whitespace (Alembic's rule without ``path_separator``). Only the first two allow a
    space in a path; a colon belongs to Alembic's ``package:directory`` form unless it is
    the separator. Pure."""
    if not value:
        return ()
    if separator is None and "\n" in value.strip():
        separator = "\n"
    parts = value.split(separator) if separator else re.split(r"[,\s]+", value)
    return tuple(part.strip() for part in parts if part.strip())


def declared_separator(config: Any) -> str | None:
    """What the project's ``path_separator`` (alembic.ini's ``[alembic]``) splits on, or
    None when it declares none. Raises :class:`ConfigError` for a value Alembic refuses."""
    declared = config.get_main_option("path_separator")
    if declared is None:
        return None
    if declared not in PATH_SEPARATORS:
        raise ConfigError(
            f"ALEMBIC_CONFIG: path_separator = {declared!r} is not one of Alembic's "
            f"({', '.join(PATH_SEPARATORS)})"
        )
    return PATH_SEPARATORS[declared]


def config_files(named: Path, *, optional: bool = False) -> tuple[Path | None, Path | None]:
    """``(alembic.ini, pyproject.toml)`` for ``ALEMBIC_CONFIG`` = ``named``, each None when
    absent (a pyproject.toml beside an ini counts only with a ``[tool.alembic]`` table).
    Raises :class:`ConfigError` when neither holds an Alembic configuration, unless
    ``optional`` (the settings name the script location)."""
    if named.name == PYPROJECT:
        if not named.is_file():
            raise ConfigError(f"ALEMBIC_CONFIG: no such file {str(named)!r}")
        if not _alembic_table(named, required=True):
            raise ConfigError(f"ALEMBIC_CONFIG {str(named)!r} has no [tool.alembic] table")
        ini = named.with_name(INI)
        return (ini if ini.is_file() else None), named
    toml = named.with_name(PYPROJECT)
    toml_found = toml if toml.is_file() and _alembic_table(toml, required=False) else None
    if not named.is_file() and toml_found is None and not optional:
        raise ConfigError(
            f"ALEMBIC_CONFIG: no such file {str(named)!r} (the runner looks for "
            f"{INI}, or {PYPROJECT} with a [tool.alembic] table, in the working "
            "directory unless ALEMBIC_CONFIG is set; a project that ships neither sets "
            "MIGRATION_SCRIPT_LOCATION)"
        )
    return (named if named.is_file() else None), toml_found


def open_config(project: Project) -> Any:
    """Alembic's ``Config`` for ``project``: its files, then the settings' script and version
    locations over them; a multi-database project is refused (:class:`ConfigError`) before
    anything connects."""
    from alembic.config import Config

    ini, toml = config_files(project.config, optional=project.script_location is not None)
    config = Config(str(ini) if ini else None, toml_file=str(toml) if toml else None)
    if project.script_location:
        config.set_main_option("script_location", project.script_location.replace("%", "%%"))
    locations = (
        split_locations(project.version_locations, declared_separator(config))
        if project.version_locations
        else ()
    )
    if locations:
        # one per line: no path of a list given this way is split again
        config.set_main_option("path_separator", "newline")
        config.set_main_option("version_locations", "\n".join(locations).replace("%", "%%"))
    databases = config.get_alembic_option("databases")
    if databases:
        raise ConfigError(
            f"{str(ini or toml)!r} configures several databases (databases = {databases}, "
            "Alembic's multidb template): the runner migrates one database under one lock. Run "
            "it once per database, each with its own project (alembic.ini, env.py, versions)",
            databases=[name.strip() for name in databases.split(",")],
        )
    return config


def _alembic_table(path: Path, required: bool) -> bool:
    import tomllib  # only where Alembic's configuration is read: not on a no-op with a manifest

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        if required:
            raise ConfigError(
                f"ALEMBIC_CONFIG {str(path)!r} is not valid TOML ({type(exc).__name__})"
            ) from None
        return False
    return isinstance(data.get("tool", {}).get("alembic"), dict)
