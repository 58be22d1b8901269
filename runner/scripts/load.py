"""The migration scripts: load the Alembic script directory, check it, describe it as plain data.

Everything here happens before the database is touched, so a broken revision file or a
history with several heads fails the run at once, naming the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, EnvPyFailed, RunnerError, ScriptsInvalid
from runner.limits import MAX_TIMEOUT_S, parse_schedule
from runner.observe import descriptors
from runner.scripts.alembic_config import Project, open_config
from runner.scripts.bootstrap import run_bootstrap
from runner.scripts.env_thread import call_in

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
    #: the branch labels the revision declares (``branch_labels``)
    branches: tuple[str, ...] = ()
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
    #: where env.py runs (:mod:`runner.scripts.env_thread`)
    env_py_thread: str = "main"

    def run_env(self) -> None:
        """env.py, inside an ``EnvironmentContext`` the caller entered, where it must run."""
        with descriptors.captured():  # what env.py's child processes write, too
            call_in(self.env_py_thread, self.directory.run_env)


def load(where: Project | Path, checksums: Mapping[str, str] | None = None) -> Loaded:
    """Load the project's Alembic configuration, run its bootstrap (if any), load every
    revision file. ``checksums``: those already known (from a current manifest), so that
    those files are not read a second time. Raises :class:`ConfigError` for a missing or
    unusable configuration, :class:`ScriptsInvalid` for broken scripts."""
    project = Project.of(where)
    config, directory = _directory(project)
    check_env_py(Path(directory.dir) / "env.py")  # before connecting: exit 7, not a failed run
    with descriptors.captured():  # the project's code runs: the bootstrap, revisions' imports
        run_bootstrap(project.bootstrap)  # after prepend_sys_path, before env.py or a revision
        locations = version_locations(project, directory)  # may import a package:directory
    found = tuple(str(p.resolve()) for p in locations)
    with descriptors.captured():
        ordered = _walk(directory, locations)
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
            tuple(sorted(script.branch_labels)),
            revision_phase(script.module, script.path),
            schedule,
        )
    heads = tuple(directory.get_heads())
    return Loaded(config, directory, Scripts(heads, revisions, found), project.env_py_thread)


def _directory(project: Project) -> tuple[Any, Any]:
    """Alembic's ``Config`` and ``ScriptDirectory`` for ``project``."""
    import configparser  # with Alembic: not on a no-op with a manifest

    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    named = str(project.config)
    try:
        config = open_config(project)
        if not config.get_alembic_option("script_location"):
            raise ConfigError(
                f"ALEMBIC_CONFIG {named!r} has no script_location in [alembic] (nor in "
                "[tool.alembic] of a pyproject.toml beside it); a project without either "
                "sets MIGRATION_SCRIPT_LOCATION"
            )
        return config, ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ConfigError(f"ALEMBIC_CONFIG: script_location unusable: {exc}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:  # the message may quote the file: don't
        raise ConfigError(
            f"ALEMBIC_CONFIG {named!r} is not a valid alembic.ini ({type(exc).__name__})"
        ) from None
    except ImportError as exc:  # a package:path script_location whose package is not there
        raise ConfigError(
            f"script_location names a package that cannot be imported ({exc}): check "
            "MIGRATION_SCRIPT_LOCATION / script_location and the runner's environment"
        ) from None
    except ValueError as exc:  # e.g. an unknown path_separator
        raise ConfigError(f"ALEMBIC_CONFIG {named!r}: {exc}") from None


def _walk(directory: Any, locations: list[Path]) -> list[Any]:
    """Every revision, base first, imported; :class:`ScriptsInvalid` naming the file."""
    from alembic.util import CommandError

    try:
        return list(reversed(list(directory.walk_revisions())))
    except CommandError as exc:
        raise ScriptsInvalid(
            f"the revision history in {_names(locations)} is inconsistent: {exc}"
        ) from None
    except RunnerError:  # Interrupted: a signal while the files were imported
        raise
    except BaseException as exc:  # anything a revision file raised at import, sys.exit too
        culprit = _culprit(exc, locations)
        raise ScriptsInvalid(
            f"cannot load migration script {culprit}: {type(exc).__name__}: {exc}", path=culprit
        ) from None


def version_locations(project: Project, directory: Any) -> list[Path]:
    """The version directories, each one there. Raises :class:`ConfigError` blaming the
    setting that named them: ``MIGRATION_VERSION_LOCATIONS`` (every location it names must
    be a directory) or ``ALEMBIC_CONFIG`` (at least one must be)."""
    setting = "MIGRATION_VERSION_LOCATIONS" if project.version_locations else "ALEMBIC_CONFIG"
    try:
        locations = [Path(p) for p in directory._version_locations]
    except (ImportError, TypeError) as exc:  # package:directory, and no such package
        raise ConfigError(
            f"{setting}: a version location names a package that cannot be imported "
            f"({type(exc).__name__}: {exc}); a relative path with a colon is read as "
            "package:directory"
        ) from None
    there = [p for p in locations if p.is_dir()]
    if project.version_locations and len(there) < len(locations):
        raise ConfigError(
            f"MIGRATION_VERSION_LOCATIONS: no such directory: "
            f"{_names([p for p in locations if not p.is_dir()])}. The value is split on the "
            "path_separator alembic.ini declares, else one location per line, else on commas "
            "and whitespace: a path with spaces needs path_separator or one location per line",
            locations=[str(p) for p in locations],
        )
    if not there:
        raise ConfigError(
            f"ALEMBIC_CONFIG: no versions directory under script_location "
            f"({_names(locations)}): is the image missing the migrations?"
        )
    return there


def _names(locations: list[Path]) -> str:
    return ", ".join(str(p) for p in locations)


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
        raise EnvPyFailed(
            f"env.py ({where}) does not compile: {type(exc).__name__}: "
            f"{getattr(exc, 'msg', exc)}. No revision started: nothing was applied (checked "
            "before connecting). Fix env.py (plain `alembic upgrade` fails the same way) and "
            "run again",
            env_py=where,
            error_class=type(exc).__name__,
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


def resolve_target(
    scripts: Scripts, directory: Any, target: str, current: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The revision ids an upgrade to ``target`` reaches from ``current``: every form
    ``alembic upgrade`` accepts (``head``, which needs exactly one head; ``heads``; a revision
    or prefix; ``branch@head``; ``rev@branch``; ``+N``, ``branch@+N``, ``rev+N``), resolved by
    Alembic's own parser. Raises :class:`ConfigError` for a target Alembic refuses."""
    from alembic.script.revision import RevisionError
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
    try:
        found = directory.revision_map._parse_upgrade_target(
            current_revisions=current, target=target, assert_relative_length=True
        )
    except (CommandError, RevisionError) as exc:
        raise ConfigError(f"MIGRATION_TARGET {target!r}: {exc}") from None
    return tuple(sorted(rev.revision for rev in found if rev is not None))


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
    """:class:`ScriptsInvalid` when there are several heads: the advice depends on whether
    they carry branch labels (branches by design) or not (a merge is missing)."""
    if len(scripts.heads) <= 1:
        return
    heads = [scripts.revisions[h] for h in scripts.heads]
    if any(rev.branches for rev in heads):
        named = ", ".join(f"{r.id} ({'/'.join(r.branches) or 'no label'})" for r in heads)
        first = next(label for r in heads for label in r.branches)
        raise ScriptsInvalid(
            f"the scripts have {len(heads)} heads on labelled branches ({named}), so 'head' "
            "is ambiguous: upgrade every branch with MIGRATION_TARGET=heads, or one branch "
            f"with MIGRATION_TARGET={first}@head",
            heads=list(scripts.heads),
        )
    files = ", ".join(Path(r.path).name for r in heads)
    raise ScriptsInvalid(
        f"the scripts have {len(heads)} heads ({', '.join(scripts.heads)}"
        f' in {files}); merge them with `alembic merge heads -m "merge"`',
        heads=list(scripts.heads),
    )


def _culprit(exc: BaseException, locations: list[Path]) -> str:
    """The revision file an import error came from (or the versions directories)."""
    filename = getattr(exc, "filename", None)
    if isinstance(exc, SyntaxError) and filename:
        return str(filename)
    roots = [p.resolve() for p in locations]
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if any(root in path.parents for root in roots):  # recursive_version_locations too
            return frame.filename
    return _names(locations)


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
    if target.endswith("@base"):  # Alembic reverts only that branch; ours would revert all
        raise ConfigError(
            f"{target!r}: a branch's base is not a target the runner plans (it would revert "
            "the other branches too); name the revision to go down to, or base. Nothing was "
            "touched"
        )
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
