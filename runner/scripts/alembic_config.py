"""Finding a project's Alembic configuration as Alembic does: ``alembic.ini``, and since
Alembic 1.16 the ``[tool.alembic]`` table of ``pyproject.toml`` (the ``pyproject`` templates
keep ``script_location`` and the rest there, and only the URL and logging in alembic.ini).

``ALEMBIC_CONFIG`` names either file (Alembic's command line reads the same variable); the
other one is looked for beside it. Alembic's command line looks for the other in the working
directory instead: the same place when it is run from the project's directory, as it usually
is, and never a file of another project when it is not.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from runner.errors import ConfigError

INI = "alembic.ini"
PYPROJECT = "pyproject.toml"


def config_files(named: Path) -> tuple[Path | None, Path | None]:
    """``(alembic.ini, pyproject.toml)`` for ``ALEMBIC_CONFIG`` = ``named``, each None when
    absent (a pyproject.toml beside an ini counts only with a ``[tool.alembic]`` table).
    Raises :class:`ConfigError` when neither holds an Alembic configuration."""
    if named.name == PYPROJECT:
        if not named.is_file():
            raise ConfigError(f"ALEMBIC_CONFIG: no such file {str(named)!r}")
        if not _alembic_table(named, required=True):
            raise ConfigError(f"ALEMBIC_CONFIG {str(named)!r} has no [tool.alembic] table")
        ini = named.with_name(INI)
        return (ini if ini.is_file() else None), named
    toml = named.with_name(PYPROJECT)
    toml_found = toml if toml.is_file() and _alembic_table(toml, required=False) else None
    if not named.is_file() and toml_found is None:
        raise ConfigError(
            f"ALEMBIC_CONFIG: no such file {str(named)!r} (the runner looks for "
            f"{INI}, or {PYPROJECT} with a [tool.alembic] table, in the working "
            "directory unless ALEMBIC_CONFIG is set)"
        )
    return (named if named.is_file() else None), toml_found


def open_config(named: Path) -> Any:
    """Alembic's ``Config`` for ``ALEMBIC_CONFIG`` = ``named``; a multi-database project is
    refused (:class:`ConfigError`) before anything connects."""
    from alembic.config import Config

    ini, toml = config_files(named)
    config = Config(str(ini) if ini else None, toml_file=str(toml) if toml else None)
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
