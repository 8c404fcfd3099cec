"""PostgreSQL from Debian's packages, a private server for the archive of finished jobs.

`start(data)` makes a database cluster in `data` on first use (initdb, password
authentication, a password made for it and kept beside it), starts `postgres` on
127.0.0.1 at a free port (no Unix socket), waits until it answers and creates the
database `cerise`. A later start with the same `data` keeps what it holds. PostgreSQL
refuses to run as root, so under root it runs in a user namespace of its own as the
`postgres` account the package makes, mapped to root outside: its files stay root's,
wherever the state directory is (the postgres account itself could not reach one under
/root or in pytest's 0700 directories).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cerise.devenv.process import Daemon, StartupError, free_port
from cerise.devenv.system import INSTALL_HINT

DATABASE = "cerise"
USER = "cerise"
ACCOUNT = "postgres"
"""Who the server is inside its user namespace when we are root (initdb looks it up)."""


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
        # imported here: the `cerise` command imports this module for `cerise dev up`, and
        # psycopg would add a fifth to the start of every other command
        import psycopg

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
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret, cluster = data / "password", data / "cluster"
    if (cluster / "PG_VERSION").exists():
        return secret.read_text().strip()
    shutil.rmtree(cluster, ignore_errors=True)  # a first start that died half-way
    password = secrets.token_urlsafe(24)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    done = subprocess.run(
        [*_as_owner(), str(bin_dir() / "initdb"), "-D", str(cluster), "-U", USER,
         "--auth=scram-sha-256", f"--pwfile={secret}", "--encoding=UTF8", "--locale=C.UTF-8"],
        capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise StartupError(f"initdb in {cluster} failed: {done.stderr.strip()}")
    return password


def _as_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL program as a user other than root."""
    if os.geteuid() != 0:
        return []
    try:
        inner = pwd.getpwnam(ACCOUNT)
    except KeyError:
        raise StartupError(f"there is no {ACCOUNT} account; {INSTALL_HINT}") from None
    return ["unshare", "--user", f"--map-user={inner.pw_uid}",
            f"--map-group={inner.pw_gid}", "--"]
