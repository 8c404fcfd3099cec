"""Slurm's accounting for the test cluster: slurmdbd on a private MariaDB.

`start` runs MariaDB (`cerise.devenv.mariadb`) and slurmdbd with its `slurmdbd.conf`
beside the cluster's slurm.conf (where slurmdbd and the clients look for it), and
registers the cluster, so that slurmctld records every job and `sacct` answers with the
jobs' elapsed time, CPU time, max RSS and cores (`jobacct_gather/linux` samples them).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cerise.devenv import mariadb, statedir
from cerise.devenv.process import Daemon, StartupError, free_port
from cerise.devenv.system import require_programs

SLURMDBD = Path("/usr/sbin/slurmdbd")


@dataclass(frozen=True)
class Accounting:
    """Where slurmctld finds slurmdbd."""

    port: int
    munge_socket: Path
    """The munged that signs what is sent to slurmdbd (Slurm's default one otherwise)."""

    @property
    def slurm_conf_lines(self) -> str:
        """The lines of slurm.conf that turn accounting on."""
        return (f"AccountingStorageType=accounting_storage/slurmdbd\n"
                f"AccountingStorageHost=localhost\nAccountingStoragePort={self.port}\n"
                f"AccountingStoragePass={self.munge_socket}\n"
                f"JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=task=5\n")


def slurmdbd_conf(*, root: Path, munge_socket: Path, port: int,
                  database: mariadb.MariaDB) -> str:
    """slurmdbd.conf: on 127.0.0.1 at `port`, storing in `database`."""
    return f"""\
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={port}
SlurmUser=root
PidFile={root / "slurmdbd.pid"}
StorageType=accounting_storage/mysql
StorageHost={database.host}
StoragePort={database.port}
StorageUser={database.user}
StoragePass={database.password}
StorageLoc={mariadb.DATABASE}
"""


def start(*, conf: Path, cluster: str, munge_socket: Path, state: statedir.StateDir,
          stack: contextlib.ExitStack, timeout: float = 60.0) -> Accounting:
    """Start MariaDB and slurmdbd for the cluster of slurm.conf `conf` (not yet written)
    and register the cluster; `stack` stops them."""
    require_programs(str(SLURMDBD), "sacctmgr")
    root = conf.parent
    database = mariadb.start(root / "mariadb", state, timeout=timeout)
    stack.callback(database.stop)
    port = free_port()
    dbd_conf = root / "slurmdbd.conf"
    fd = os.open(dbd_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(slurmdbd_conf(root=root, munge_socket=munge_socket, port=port,
                                database=database))
    environment = {**os.environ, "SLURM_CONF": str(conf)}
    accounting = Accounting(port=port, munge_socket=munge_socket)
    # sacctmgr reads slurm.conf for slurmdbd's address: a stand-in until the cluster's own.
    conf.write_text(f"ClusterName={cluster}\nSlurmctldHost=localhost\nAuthType=auth/munge\n"
                    f"AuthInfo=socket={munge_socket}\n{accounting.slurm_conf_lines}")
    daemon = state.start(Daemon(name="slurmdbd", argv=[str(SLURMDBD), "-D"],
                                log=root / "slurmdbd.log", env=environment))
    stack.callback(daemon.stop)
    said: list[str] = []
    try:
        daemon.wait_ready(lambda: _sacctmgr(environment, said, "-i", "add", "cluster", cluster),
                          timeout=timeout)
    except StartupError as error:
        raise StartupError(f"{error}\nsacctmgr said: {''.join(said[-1:])}") from None
    return accounting


def _sacctmgr(environment: dict[str, str], said: list[str], *args: str) -> bool:
    """Run sacctmgr; whether it worked (an existing cluster counts as added). Its words
    go to `said`."""
    try:
        done = subprocess.run(["sacctmgr", *args], env=environment, capture_output=True,
                              text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        said.append("no answer within 10 s")
        return False
    said.append(done.stdout + done.stderr)
    return done.returncode == 0 or "already exists" in done.stdout + done.stderr

