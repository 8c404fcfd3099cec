"""MariaDB from Debian's packages, a private server for Slurm's accounting (slurmdbd).

`start(root)` makes a data directory in `root` (a copy of one `mariadb-install-db` made
once, with small InnoDB logs, kept in `~/.cache/cerise-mariadb/`),
starts `mariadbd` on 127.0.0.1 at a free port and on a socket in `root`, waits until it
answers and creates the database user slurmdbd logs in as, with a password made for it.
It runs as root (`--user=root`), with no option file read (`--no-defaults`): nothing of
the host's MariaDB, if it has one, is used or touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cerise.devenv import statedir
from cerise.devenv.process import Daemon, StartupError, free_port
from cerise.devenv.system import INSTALL_HINT, require_programs

SERVER = Path("/usr/sbin/mariadbd")
USER = "slurm"
DATABASE = "slurm_acct_db"
_SMALL = ("--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M", "--skip-log-bin",
          "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2")
"""Options that keep the server small and quick to start (a test's database, not a site's)."""


@dataclass(frozen=True)
class MariaDB:
    """A running private server and how slurmdbd logs in."""

    daemon: Daemon
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = USER

    def stop(self) -> None:
        self.daemon.stop()


def start(root: Path, state: statedir.StateDir, *, timeout: float = 60.0) -> MariaDB:
    """Start a server whose files are all in `root` (made on first use) on a free port,
    recorded in `state` (reaped with it after a crash)."""
    require_programs(str(SERVER), "mariadb-install-db", "mariadb")
    data, socket = root / "data", root / "mysqld.sock"
    if not (data / "mysql").is_dir():
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copytree(_template(), data, symlinks=True)
    port = free_port()
    argv = [str(SERVER), "--no-defaults", f"--datadir={data}", "--user=root",
            "--bind-address=127.0.0.1", f"--port={port}", f"--socket={socket}",
            f"--pid-file={root / 'mysqld.pid'}", f"--log-error={root / 'mysqld.log'}", *_SMALL]
    daemon = state.start(Daemon(name="mariadbd", argv=argv, log=root / "mysqld.out"))
    password = secrets.token_urlsafe(18)
    statement = (f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                 f"ALTER USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                 f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1';")
    try:
        daemon.wait_ready(lambda: _run(socket, "SELECT 1"), timeout=timeout)
        if not _run(socket, statement):
            raise StartupError(f"MariaDB in {root} refused to create the user {USER}")
    except BaseException:
        daemon.stop()
        raise
    return MariaDB(daemon=daemon, port=port, password=password)


def _template() -> Path:
    """A fresh data directory made once per installed server (`mariadb-install-db` takes
    half a second, a copy a twentieth), kept in the user's cache."""
    stat = SERVER.stat()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    template = cache / "cerise-mariadb" / f"{stat.st_size}-{int(stat.st_mtime)}"
    if (template / "mysql").is_dir():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    making = Path(tempfile.mkdtemp(dir=template.parent, prefix=".making-"))
    try:
        done = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={making / 'data'}",
             "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db",
             "--innodb-log-file-size=4M"],
            capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise StartupError(f"mariadb-install-db failed: "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}; {INSTALL_HINT}")
        with contextlib.suppress(OSError):  # another process made it first: theirs stands
            (making / "data").rename(template)
    finally:
        shutil.rmtree(making, ignore_errors=True)
    return template


def _run(socket: Path, statement: str) -> bool:
    """Run SQL as root over the server's socket; whether it worked."""
    done = subprocess.run(["mariadb", "--no-defaults", f"--socket={socket}", "-uroot",
                           "-e", statement], capture_output=True, timeout=10, check=False)
    return done.returncode == 0
