"""A throwaway PostgreSQL cluster: ``verify``'s scratch server when it is given none (the
repository's demo, tests and bench build on it too).

The cluster listens on 127.0.0.1 (and a unix socket in its own directory) on a free port,
keeps its data in a temporary directory, runs with fsync off (nothing in it is worth
keeping), and is removed by :meth:`Cluster.destroy`. As root, the server binaries run as the
``postgres`` OS user (``initdb`` refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from runner.checklist.server_binaries import ClusterError, find_bindir

SUPERUSER = "postgres"
#: the longest unix socket path (sun_path's 108 bytes with the NUL): a server whose socket
#: path would be longer does not start
SUN_PATH_MAX = 107
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One PostgreSQL cluster in ``root`` (``root/data``, ``root/log``, socket in ``root``)."""

    def __init__(
        self, root: Path, password: str | None, bindir: Path, port: int | None = None
    ) -> None:
        self.root = root
        self.password = password
        self.bindir = bindir
        self.port = port or free_port()
        self.settings: dict[str, str] = dict(FAST_SETTINGS)
        self.socket_dir = self._socket_dir()

    @classmethod
    def default_bindir(cls) -> Path:
        """The binaries :meth:`create` uses when given none."""
        return find_bindir()

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    def create(
        cls, password: str | None = None, parent: str | None = None, bindir: Path | None = None
    ) -> Cluster:
        """``initdb`` a new cluster in a fresh temporary directory (about a second), with the
        binaries in ``bindir`` (default: :meth:`default_bindir`). Raises :class:`ClusterError`."""
        bindir = bindir or cls.default_bindir()
        cluster = cls(Path(tempfile.mkdtemp(prefix="pgcluster-", dir=parent)), password, bindir)
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
        try:
            cluster._own(cluster.root)
            cluster._require_reachable()
            if password is not None:
                pwfile = cluster.root / "pwfile"
                pwfile.write_text(password + "\n")
                cluster._own(pwfile)
                args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            else:
                args += ["--auth-host=trust"]
            cluster._run(args)
        except BaseException:
            shutil.rmtree(cluster.root, ignore_errors=True)
            raise
        finally:
            (cluster.root / "pwfile").unlink(missing_ok=True)
        return cluster

    def clone(self, port: int | None = None) -> Cluster:
        """A copy of this (stopped) cluster's data in a new directory: ~0.1 s instead of initdb."""
        root = Path(tempfile.mkdtemp(prefix="pgcluster-", dir=self.root.parent))
        shutil.copytree(self.data, root / "data", symlinks=True)
        twin = type(self)(root, self.password, self.bindir, port)
        twin.settings = dict(self.settings)
        twin._own(root, recursive=True)
        return twin

    def start(self, **settings: str) -> None:
        """Start the server and wait until it accepts connections."""
        self.settings.update(settings)
        opts = [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir}"]
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
        """Stop the server at once and remove its directory. Safe to call twice."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.socket_dir != self.root:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

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
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    # --- helpers ----------------------------------------------------------------------

    def _require_reachable(self) -> None:
        """As root, the ``postgres`` OS user must be able to enter every directory above the
        cluster's (a TMPDIR made by ``mktemp -d`` is 0700): say so, rather than let initdb
        fail on a file it cannot open."""
        if os.geteuid() != 0:
            return
        uid = pwd.getpwnam("postgres").pw_uid
        for parent in self.root.parents:
            info = parent.stat()
            if info.st_uid != uid and not info.st_mode & 0o001:
                raise ClusterError(
                    f"as root the server runs as the OS user postgres, which cannot enter "
                    f"{parent} (mode {info.st_mode & 0o777:o}): set TMPDIR to a directory it "
                    "can reach (such as /tmp), or run as another user"
                )

    def _socket_dir(self) -> Path:
        """The cluster's own directory, unless the socket path in it would be too long (a
        deep TMPDIR, such as pytest's): then a short directory of its own in /tmp."""
        if len(f"{self.root}/.s.PGSQL.{self.port}") <= SUN_PATH_MAX:
            return self.root
        try:
            short = Path(tempfile.mkdtemp(prefix="pgsock-", dir="/tmp"))
        except OSError as exc:
            raise ClusterError(
                f"the server's socket path in {self.root} is longer than {SUN_PATH_MAX} bytes "
                f"and /tmp is not usable ({exc}): set TMPDIR to a shorter directory"
            ) from None
        self._own(short)
        return short

    def _run(self, args: list[str], check: bool = True) -> None:
        if os.geteuid() == 0:
            runuser = shutil.which("runuser", path=f"{os.defpath}:/usr/sbin:/sbin") or "runuser"
            args = [runuser, "-u", "postgres", "--", *args]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, cwd="/")
        except OSError as exc:
            raise ClusterError(f"cannot run {args[0]}: {exc}") from None
        if check and proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise ClusterError(
                f"{Path(args[-1]).name} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}\n{log}"
            )

    def _own(self, path: Path, recursive: bool = False) -> None:
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError(
                "running as root, the server must run as the OS user postgres, and there is "
                "none: create it (useradd --system postgres) or run as another user"
            ) from None
        paths = [path] + (list(path.rglob("*")) if recursive else [])
        for item in paths:
            os.lchown(item, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o755)
