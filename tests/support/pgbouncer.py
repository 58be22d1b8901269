"""A real PgBouncer in front of the test PostgreSQL, for tests that need a connection pooler.

``PgBouncer`` writes a ``pgbouncer.ini`` and a ``userlist.txt``, runs the ``pgbouncer``
binary in the foreground as a child process listening on 127.0.0.1 and a free port (no
unix socket), waits until that port accepts connections, and on :meth:`PgBouncer.stop`
terminates it and waits for it. It is found on ``$PATH`` or as ``/usr/sbin/pgbouncer``
(Debian package ``pgbouncer``; CI installs it); if it is missing :class:`PgBouncerError`
is raised -- tests that use it fail, they are never skipped.

Authentication (PgBouncer 1.18 in front of an upstream that uses scram-sha-256 over TCP,
as ``initdb --auth-host=scram-sha-256`` sets up):

* ``auth_file`` (``userlist.txt``) holds the one user with its password in **plain text**.
  PgBouncer can only log in to a SCRAM upstream if it knows the plain password (or a SCRAM
  secret, or the client's SCRAM keys); an md5 hash in the userlist would not do.
* ``auth_type = scram-sha-256`` for the client side: clients authenticate to PgBouncer with
  the same user and password as to PostgreSQL, checked against the userlist (a wrong
  password is refused by PgBouncer itself), and PgBouncer then does its own SCRAM exchange
  with PostgreSQL using the plain password from the userlist.
* ``[databases]`` entries therefore carry no ``user=``/``password=`` (which would force one
  login for everyone and put the password in the ini, where ``#``, ``%`` and quotes need care).

Per-test fixtures are the plain generators :func:`pgbouncer_session`,
:func:`pgbouncer_transaction` (and :func:`pgbouncer_for`); a conftest wraps them::

    @pytest.fixture
    def pgbouncer_session(database, tmp_path):
        yield from tests.support.pgbouncer.pgbouncer_session(database, tmp_path)

Gotcha for ``pool_mode = transaction``: psycopg 3 prepares a statement on the server after
it has executed the same query ``prepare_threshold`` (default 5) times on one connection.
Through a transaction pooler the next execution may run on another server connection, where
that prepared statement does not exist (PgBouncer 1.18 does not track prepared statements).
Connect with ``prepare_threshold=None`` through a transaction pooler (see
``test_pgbouncer_fixture.py``, which shows the failure).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg

from devtools.pgcluster import free_port
from tests.support.urls import pg_url

PoolMode = Literal["session", "transaction"]
RUN_AS = "postgres"  # PgBouncer refuses to run as root
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class PgBouncerError(RuntimeError):
    pass


class _PortTaken(Exception):
    pass


def find_pgbouncer() -> str:
    """The ``pgbouncer`` binary (``$PATH``, then ``/usr/sbin``), or :class:`PgBouncerError`."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise PgBouncerError(
            "pgbouncer binary not found on $PATH or in /usr/sbin: install it "
            "(apt-get install -y pgbouncer); tests that need it cannot run without it"
        )
    return found


def _userlist_line(user: str, password: str) -> str:
    # userlist.txt: "name" "password", a double quote inside a field is written twice
    return '"{}" "{}"\n'.format(user.replace('"', '""'), password.replace('"', '""'))


class PgBouncer:
    """One PgBouncer process on 127.0.0.1:``port`` in front of ``upstream_host:upstream_port``.

    ``databases`` is ``"*"`` (default: a fallback entry ``* = host=... port=...`` that routes
    any database name to the same-named upstream database) or one or more database names.
    """

    def __init__(
        self,
        *,
        upstream_host: str,
        upstream_port: int,
        user: str,
        password: str,
        workdir: Path,
        databases: str | Iterable[str] = "*",
        pool_mode: PoolMode = "session",
        default_pool_size: int = 5,
        max_client_conn: int = 100,
        port: int | None = None,
    ) -> None:
        if pool_mode not in ("session", "transaction"):
            raise ValueError(f"pool_mode must be 'session' or 'transaction', not {pool_mode!r}")
        self.binary = find_pgbouncer()
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.user = user
        self.password = password
        self.workdir = Path(workdir)
        self.databases = [databases] if isinstance(databases, str) else list(databases)
        self.pool_mode: PoolMode = pool_mode
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.host = "127.0.0.1"
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.logfile = self.workdir / f"pgbouncer-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._confdir: Path | None = None

    # --- addresses --------------------------------------------------------------------

    def url(self, dbname: str, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL through PgBouncer (contains the password)."""
        return pg_url(
            self.user, self.password, self.host, self.port, dbname, scheme=f"postgresql+{driver}"
        )

    def connect_kwargs(self, dbname: str) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` through PgBouncer (contain the password)."""
        return dict(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname
        )

    def connect(self, dbname: str, **kw: Any) -> psycopg.Connection[Any]:
        """A psycopg connection through PgBouncer, autocommit unless ``autocommit=False``."""
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 5)
        return psycopg.connect(**self.connect_kwargs(dbname), **kw)

    # --- configuration ----------------------------------------------------------------

    def config(self, confdir: Path) -> str:
        upstream = f"host={self.upstream_host} port={self.upstream_port}"
        if self.databases == ["*"]:
            entries = [f"* = {upstream}"]
        else:
            entries = [f"{name} = {upstream} dbname={name}" for name in self.databases]
        return "\n".join(
            [
                "[databases]",
                *entries,
                "",
                "[pgbouncer]",
                f"listen_addr = {self.host}",
                f"listen_port = {self.port}",
                "unix_socket_dir =",  # TCP only: no socket file left in /tmp
                "auth_type = scram-sha-256",  # see the module docstring
                f"auth_file = {confdir / 'userlist.txt'}",
                f"pool_mode = {self.pool_mode}",
                f"default_pool_size = {self.default_pool_size}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                f"max_client_conn = {self.max_client_conn}",
                # psycopg 3 (libpq) sends only user, database and, if given, application_name /
                # client_encoding, which PgBouncer tracks itself. JDBC & co send extra_float_digits.
                # `options` is deliberately NOT ignored: silently dropping e.g. `-c lock_timeout=...`
                # would make a test pass for the wrong reason; PgBouncer 1.18 refuses it instead.
                "ignore_startup_parameters = extra_float_digits",
                "server_reset_query = DISCARD ALL",  # 1.18 default; session mode only
                "server_login_retry = 1",  # default 15 s of refusing clients after an upstream failure
                "log_connections = 1",
                "log_disconnections = 1",
                "log_pooler_errors = 1",
                "stats_period = 3600",
                "",
            ]
        )

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> PgBouncer:
        """Start PgBouncer and wait (at most 10 s) until it has logged that it listens on its
        port and that port accepts connections; on failure, raise with PgBouncer's log.

        If the free port picked in the constructor was taken by someone else in between,
        a new one is picked (twice at most), unless the port was given explicitly."""
        if self.proc is not None:
            raise PgBouncerError("PgBouncer already started")
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except _PortTaken:
                if self._fixed_port or attempt == 2:
                    raise PgBouncerError(
                        f"port {self.port} already in use:\n{self.log()}"
                    ) from None
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        as_root = os.geteuid() == 0
        # The config holds the password, so it lives in a private directory that the OS user
        # running PgBouncer can read. As root that is `postgres`, which cannot enter pytest's
        # tmp_path (/tmp/pytest-of-root is 0700): use a fresh directory in /tmp it owns.
        self._confdir = Path(tempfile.mkdtemp(prefix="pgbouncer-")) if as_root else self.workdir
        ini = self._confdir / "pgbouncer.ini"
        userlist = self._confdir / "userlist.txt"
        ini.write_text(self.config(self._confdir))
        userlist.write_text(_userlist_line(self.user, self.password))
        for path in (ini, userlist):
            os.chmod(path, 0o600)
        popen_kw: dict[str, Any] = {}
        if as_root:
            account = pwd.getpwnam(RUN_AS)
            for path in (self._confdir, ini, userlist):
                os.chown(path, account.pw_uid, account.pw_gid)
            os.chmod(self._confdir, 0o700)
            # setuid/setgid in the child (what `runuser -u postgres --` would do), but with no
            # runuser process in between: the pid we signal and wait for is PgBouncer's own.
            popen_kw = dict(
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=[],
                env={**os.environ, "HOME": account.pw_dir, "USER": RUN_AS},
            )
        # Foreground (no -d): PgBouncer logs to stderr, which goes to our log file (opened by
        # us, so the child needs no write access to the work dir).
        self.logfile = self.workdir / f"pgbouncer-{self.port}.log"
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, str(ini)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                **popen_kw,
            )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log():
                    raise _PortTaken()
                raise PgBouncerError(
                    f"pgbouncer exited with {self.proc.returncode} on start:\n{self.log()}"
                )
            # An accepting port alone could be somebody else's listener (the free port was
            # taken in between); PgBouncer logs this line once it has bound the port itself.
            if f"listening on {self.host}:{self.port}" in self.log():
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise PgBouncerError(
                    f"pgbouncer not listening on {self.host}:{self.port} "
                    f"after {START_TIMEOUT_S:g} s:\n{self.log()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate PgBouncer (SIGTERM: immediate shutdown in 1.18) and wait; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        if self._confdir is not None and self._confdir != self.workdir:
            shutil.rmtree(self._confdir, ignore_errors=True)
        self._confdir = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """PgBouncer's log so far (its stderr)."""
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- fixture bodies (plain generators; a conftest wraps them in @pytest.fixture) ---------


def pgbouncer_for(
    database: Any, workdir: Path, pool_mode: PoolMode, **kw: Any
) -> Iterator[PgBouncer]:
    """A started PgBouncer in front of ``database`` (a ``tests.support.helpers.Database``), only
    that database name routed, stopped afterwards. ``kw`` go to :class:`PgBouncer`."""
    server = database.server
    kw.setdefault("databases", [database.name])
    with PgBouncer(
        upstream_host=server.host,
        upstream_port=server.port,
        user=server.user,
        password=server.password,
        workdir=workdir,
        pool_mode=pool_mode,
        **kw,
    ) as bouncer:
        yield bouncer


def pgbouncer_session(database: Any, workdir: Path) -> Iterator[PgBouncer]:
    yield from pgbouncer_for(database, workdir, "session")


def pgbouncer_transaction(database: Any, workdir: Path) -> Iterator[PgBouncer]:
    yield from pgbouncer_for(database, workdir, "transaction")
