"""The migration scripts: load the Alembic script directory, check it, describe it as plain data.

Everything here happens before the database is touched, so a broken revision file or a
history with several heads fails the run at once, naming the files.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, RunnerError, ScriptsInvalid
from runner.limits import MAX_TIMEOUT_S, parse_schedule
from runner.scripts.alembic_config import open_config

#: The module-level dict a revision may define to change how the runner applies it, e.g.
#: ``migration_runner = {"lock_timeout": 0}`` for a backfill that may wait for locks, or
#: ``{"lock_schedule": "0.1*50,1*10"}`` for a revision with a schedule of its own, or
#: ``migration_runner = {"phase": "contract"}`` for a revision that must wait until the new
#: code is live (see docs/zero-downtime.md).
OPTIONS_ATTRIBUTE = "migration_runner"
OPTION_KEYS = ("lock_timeout", "statement_timeout", "lock_schedule")
PHASE_KEY = "phase"
#: ``expand``: safe while the previous release still runs (the default); ``contract``: only
#: once the new release is live (drops, SET NOT NULL, ...)
PHASES = ("expand", "contract")


@dataclasses.dataclass(frozen=True)
class Revision:
    id: str
    down: tuple[str, ...]
    message: str
    path: str
    #: per-revision overrides of the runner's timeouts, in seconds (0: no limit)
    options: tuple[tuple[str, float], ...] = ()
    #: SHA-256 of the revision file, recorded in the ledger to catch edits after applying
    checksum: str = ""
    #: ``expand`` or ``contract`` (``migration_runner = {"phase": ...}``)
    phase: str = "expand"
    #: the revision's own lock schedule, as spelled (validated; see runner.limits.parse_schedule)
    lock_schedule: str | None = None


@dataclasses.dataclass(frozen=True)
class Scripts:
    """What migrations exist: revisions from base to heads, and the heads."""

    heads: tuple[str, ...]
    revisions: dict[str, Revision]  # ordered from base towards the heads
    #: the directories the revision files were found in
    versions: tuple[str, ...] = ()

    def graph(self) -> dict[str, tuple[str, ...]]:
        return {rev.id: rev.down for rev in self.revisions.values()}

    def checksums(self) -> dict[str, str]:
        return {rev.id: rev.checksum for rev in self.revisions.values()}

    def contract(self) -> frozenset[str]:
        """The revisions that must wait until the new code is live."""
        return frozenset(rev.id for rev in self.revisions.values() if rev.phase == "contract")


def file_checksum(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass
class Loaded:
    """The Alembic objects the execution needs, plus the plain description."""

    config: Any  # alembic.config.Config
    directory: Any  # alembic.script.ScriptDirectory
    scripts: Scripts


def load(config_path: Path, checksums: Mapping[str, str] | None = None) -> Loaded:
    """Load ``alembic.ini`` and every revision file. ``checksums``: those already known (from
    a current manifest), so that those files are not read a second time. Raises
    :class:`ConfigError` for a missing or unusable ini, :class:`ScriptsInvalid` for broken
    scripts."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        config = open_config(config_path)
        location = config.get_alembic_option("script_location")
        if not location:
            raise ConfigError(
                f"ALEMBIC_CONFIG {str(config_path)!r} has no script_location in "
                "[alembic] (nor in [tool.alembic] of a pyproject.toml beside it)"
            )
        directory = ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ConfigError(f"ALEMBIC_CONFIG: script_location unusable: {exc}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:  # the message may quote the file: don't
        raise ConfigError(
            f"ALEMBIC_CONFIG {str(config_path)!r} is not a valid alembic.ini ({type(exc).__name__})"
        ) from None
    versions = Path(directory.versions)
    check_env_py(Path(directory.dir) / "env.py")
    if not any(Path(p).is_dir() for p in directory._version_locations):
        raise ConfigError(
            f"ALEMBIC_CONFIG: no versions directory under script_location "
            f"({versions}): is the image missing the migrations?"
        )
    try:
        ordered = list(reversed(list(directory.walk_revisions())))
    except CommandError as exc:
        raise ScriptsInvalid(f"the revision history in {versions} is inconsistent: {exc}") from None
    except RunnerError:  # Interrupted: a signal while the files were imported
        raise
    except BaseException as exc:  # anything a revision file raised at import, sys.exit too
        raise ScriptsInvalid(
            f"cannot load migration script {_culprit(exc, versions)}: {type(exc).__name__}: {exc}",
            path=_culprit(exc, versions),
        ) from None
    known = checksums or {}
    revisions = {}
    for script in ordered:
        options, schedule = revision_options(script.module, script.path)
        revisions[script.revision] = Revision(
            script.revision,
            tuple(script._normalized_down_revisions),
            (script.doc or "").strip(),
            script.path,
            options,
            known.get(script.revision) or file_checksum(script.path),
            revision_phase(script.module, script.path),
            schedule,
        )
    heads = tuple(directory.get_heads())
    locations = tuple(
        str(Path(p).resolve()) for p in directory._version_locations if Path(p).is_dir()
    )
    return Loaded(config, directory, Scripts(heads, revisions, locations))


def check_env_py(path: Path) -> None:
    """Raise :class:`ScriptsInvalid` if ``path`` (env.py, when there is one) does not
    compile: said before the runner connects or creates anything, not from inside the run."""
    try:
        source = path.read_bytes()
    except OSError:
        return  # none: Alembic says so when it needs it
    try:
        compile(source, str(path), "exec")
    except (SyntaxError, ValueError) as exc:
        where = f"{path}:{getattr(exc, 'lineno', '?')}"
        raise ScriptsInvalid(
            f"env.py does not compile ({where}: {type(exc).__name__}: "
            f"{getattr(exc, 'msg', exc)}): fix it and run again; nothing was run",
            path=str(path),
        ) from None


def set_url(config: Any, url: str) -> None:
    """Give env.py ``sqlalchemy.url`` (escaped: alembic.ini interpolates ``%``)."""
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))


def revision_options(module: Any, path: str) -> tuple[tuple[tuple[str, float], ...], str | None]:
    """Validate a revision's ``migration_runner`` dict: its timeouts, and its lock schedule
    (None: the run's). Raises :class:`ScriptsInvalid`."""
    raw = getattr(module, OPTIONS_ATTRIBUTE, None)
    if raw is None:
        return (), None
    if not isinstance(raw, dict):
        raise ScriptsInvalid(
            f'{path}: {OPTIONS_ATTRIBUTE} must be a dict, e.g. {{"lock_timeout": 0}}', path=path
        )
    out, schedule = [], None
    for key, value in raw.items():
        if key == "lock_schedule":
            schedule = _schedule_option(value, path)
            continue
        if key == PHASE_KEY:
            continue  # revision_phase's
        if key not in OPTION_KEYS:
            raise ScriptsInvalid(
                f"{path}: unknown {OPTIONS_ATTRIBUTE} option {key!r} (known: "
                f"{', '.join((*OPTION_KEYS, PHASE_KEY))})",
                path=path,
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value <= MAX_TIMEOUT_S
        ):  # NaN fails the comparison too
            raise ScriptsInvalid(
                f"{path}: {OPTIONS_ATTRIBUTE}[{key!r}] must be a number of "
                f"seconds from 0 (no limit) to {MAX_TIMEOUT_S:g}",
                path=path,
            )
        out.append((key, float(value)))
    return tuple(sorted(out)), schedule


def _schedule_option(value: Any, path: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError('give it as a string, e.g. "steady" or "0.1*10,1*5"')
        parse_schedule(value, OPTIONS_ATTRIBUTE)
    except ValueError as exc:
        raise ScriptsInvalid(
            f"{path}: {OPTIONS_ATTRIBUTE}['lock_schedule']: {exc}", path=path
        ) from None
    return value


def revision_phase(module: Any, path: str) -> str:
    """A revision's phase: ``migration_runner["phase"]``, ``expand`` when unset. Raises
    :class:`ScriptsInvalid` for any other value (the dict itself is checked by
    :func:`revision_options`)."""
    raw = getattr(module, OPTIONS_ATTRIBUTE, None)
    if not isinstance(raw, dict) or PHASE_KEY not in raw:
        return "expand"
    if raw[PHASE_KEY] not in PHASES:
        raise ScriptsInvalid(
            f"{path}: {OPTIONS_ATTRIBUTE}[{PHASE_KEY!r}] must be one of "
            f"{', '.join(map(repr, PHASES))}, not {raw[PHASE_KEY]!r}",
            path=path,
        )
    return str(raw[PHASE_KEY])


def resolve_target(scripts: Scripts, directory: Any, target: str) -> tuple[str, ...]:
    """The revision ids ``target`` names. ``head`` needs exactly one head."""
    from alembic.util import CommandError

    if target == "head":
        require_single_head(scripts)
        if not scripts.heads:
            raise ScriptsInvalid(
                "there are no migration scripts, so no head to upgrade to: is "
                "the image missing alembic/versions? (MIGRATION_TARGET=heads "
                "accepts an empty history)"
            )
        return scripts.heads
    if target == "heads":
        return scripts.heads
    if target.startswith(("+", "-")) or "@" in target or ":" in target:
        raise ConfigError(
            f"MIGRATION_TARGET {target!r}: give a revision id, 'head' or 'heads' "
            "(relative and branch targets are not supported by upgrade)"
        )
    try:
        found = directory.get_revisions(target)
    except CommandError as exc:
        raise ConfigError(f"MIGRATION_TARGET {target!r} is not a known revision: {exc}") from None
    return tuple(rev.revision for rev in found)


def resolve_exact(scripts: Scripts, target: str) -> tuple[str, ...] | None:
    """``target`` resolved from plain data alone (head, heads, or a full revision id), or
    None when it needs Alembic's resolution (prefixes, relative or branch targets)."""
    if target == "head":
        require_single_head(scripts)
        return scripts.heads or None
    if target == "heads":
        return scripts.heads
    return (target,) if target in scripts.revisions else None


def require_single_head(scripts: Scripts) -> None:
    if len(scripts.heads) > 1:
        files = ", ".join(Path(scripts.revisions[h].path).name for h in scripts.heads)
        raise ScriptsInvalid(
            f"the scripts have {len(scripts.heads)} heads ({', '.join(scripts.heads)}"
            f' in {files}); merge them with `alembic merge heads -m "merge"`',
            heads=list(scripts.heads),
        )


def _culprit(exc: BaseException, versions: Path) -> str:
    """The revision file an import error came from (or the versions directory)."""
    filename = getattr(exc, "filename", None)
    if isinstance(exc, SyntaxError) and filename:
        return str(filename)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename).parent == versions:
            return frame.filename
    return str(versions)


def resolve_destination(
    scripts: Scripts, directory: Any, target: str, current: tuple[str, ...]
) -> tuple[str, ...]:
    """The revision ids a downgrade or stamp ``target`` names, resolved once: ``base`` is
    ``()``, ``-N`` counts back from ``current`` (see :func:`runner.plan.relative_target`),
    ``head``/``heads`` are the scripts' heads, anything else a revision id or prefix."""
    from alembic.util import CommandError

    from runner.plan import relative_target

    if target == "base":
        return ()
    if target[:1] == "-" and target[1:].isdigit():
        return relative_target(current, int(target[1:]), scripts.graph())
    if target in ("head", "heads"):
        if target == "head":
            require_single_head(scripts)
        return scripts.heads
    try:
        found = directory.get_revisions(target)
    except CommandError as exc:
        raise ConfigError(f"{target!r} is not a known revision: {exc}") from None
    return tuple(sorted(rev.revision for rev in found if rev is not None))
