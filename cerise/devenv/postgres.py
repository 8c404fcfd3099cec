"""PostgreSQL from Debian's packages, a private server for the archive of finished jobs.

`start(data)` makes a database cluster in `data` on first use (initdb, password
authentication, a password made for it and kept beside it), starts `postgres` on
127.0.0.1 at a free port (no Unix socket), waits until it answers and creates the
database `cerise`. A later start with the same `data` keeps what it holds. PostgreSQL
refuses to run as root, so under root it runs as the `postgres` account the package makes,
which must be able to reach `data`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cerise.devenv.process import Daemon, StartupError, free_port
from cerise.devenv.system import INSTALL_HINT

DATABASE = "cerise"
USER = "cerise"
SERVICE_ACCOUNT = "postgres"
"""Who runs the server when we are root."""


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda path: int(path.parent.parent.name))
    if not found:
        raise StartupError(f"PostgreSQL is not installed; {INSTALL_HINT}")
    return found[-1].parent


@dataclass
class Postgres:
    """A running (or stopped) private PostgreSQL server."""

    data: Path
    port: int
    password: str
    daemon: Daemon | None = field(default=None)

    @property
    def url(self) -> str:
        """The libpq URL of the archive database (it holds the password)."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server on its port and wait until the database answers."""
        argv = [*_as_owner(), str(bin_dir() / "postgres"), "-D", str(self.data / "cluster"),
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", "unix_socket_directories=", "-c", "fsync=on"]
        self.daemon = Daemon(f"postgres (port {self.port})", argv,
                             log=self.data / "postgres.log").start()
        self.daemon.wait_ready(self._create_database, timeout=timeout)

    def stop(self) -> None:
        """A clean shutdown in PostgreSQL's "fast" mode (SIGINT): open sessions are ended,
        not waited for."""
        if self.daemon is None or self.daemon.process is None or not self.daemon.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.daemon.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.daemon.process.wait(timeout=30)
        self.daemon.stop(grace=5)

    def _create_database(self) -> bool:
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True,
                             connect_timeout=2) as connection:
            found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                       (DATABASE,)).fetchone()
            if found is None:
                connection.execute(f"CREATE DATABASE {DATABASE}".encode())
        return True


def start(data: Path, *, timeout: float = 60.0) -> Postgres:
    """Start the server of `data` (made on first use) on a free port."""
    server = Postgres(data=data, port=free_port(), password=_initialise(data))
    server.start(timeout=timeout)
    return server


def _initialise(data: Path) -> str:
    """Make the database cluster if `data` has none; its password."""
    data.mkdir(parents=True, exist_ok=True)
    secret = data / "password"
    if (data / "cluster" / "PG_VERSION").exists():
        return secret.read_text().strip()
    cluster = data / "cluster"
    if cluster.exists():  # a first start that died half-way
        subprocess.run(["rm", "-rf", str(cluster)], check=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    pwfile = data / "password.initdb"
    _write_owned(pwfile, password + "\n")
    _own(data)
    try:
        done = subprocess.run(
            [*_as_owner(), str(bin_dir() / "initdb"), "-D", str(cluster), "-U", USER,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
             "--locale=C.UTF-8"],
            capture_output=True, text=True, timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StartupError(f"initdb in {cluster} failed: {done.stderr.strip()}")
    return password


def _as_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL program as its owner."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={SERVICE_ACCOUNT}", f"--regid={SERVICE_ACCOUNT}",
            "--init-groups", "--"]


def _owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        raise StartupError(f"there is no {SERVICE_ACCOUNT} account; {INSTALL_HINT}") from None
    return account.pw_uid, account.pw_gid


def _own(data: Path) -> None:
    """Under root, give `data` to the server's account and check it can reach it."""
    owner = _owner()
    if owner is None:
        return
    os.chown(data, *owner)
    data.chmod(0o700)
    reach = subprocess.run([*_as_owner(), "test", "-w", str(data)], capture_output=True)
    if reach.returncode != 0:
        raise StartupError(
            f"PostgreSQL runs as the {SERVICE_ACCOUNT} account, which cannot reach {data} "
            f"(a directory above it is closed to others); keep the state elsewhere, e.g. "
            f"--state /var/lib/cerise-dev, or run as an ordinary user")


def _write_owned(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    owner = _owner()
    if owner is not None:
        with contextlib.suppress(OSError):
            os.chown(path, *owner)
