"""A one-node Slurm cluster for the tests: a private munged, slurmctld and slurmd.

Configuration, controller state, slurmd spool, pid files and the munge socket all live in a
private state directory; ports are chosen at run time. Nothing is written to /etc/slurm:
clients (sbatch over SSH, the Torque wrappers) find the configuration through SLURM_CONF,
which the compute resource exports in its remote environment, as a real site's module would.
Jobs inherit it (sbatch's default --export=ALL).

Tests of outages stop and start the controller (`stop_controller`, `start_controller`);
jobs keep running under slurmd meanwhile, and the restarted controller recovers its state.
The partition's limits are enforced at submit (`EnforcePartLimits=ALL`, as many sites do),
and a job over its time limit is killed 5 s after its SIGTERM (`KillWait`). Accounting is
on, as on most sites: slurmdbd on a private MariaDB (`cerise.devenv.slurmdbd`), so `sacct`
answers; `start(accounting=False)` leaves it off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cerise.devenv import slurmdbd, statedir
from cerise.devenv.process import Daemon, StartupError, free_port, wait_until
from cerise.devenv.system import require_programs

SBIN = Path("/usr/sbin")
MUNGE_USER = "munge"
MUNGE_KEY = Path("/etc/munge/munge.key")
CLUSTER_NAME = "cerise"


@dataclass(frozen=True)
class SlurmCluster:
    """How to use the cluster: the configuration clients need and what it offers."""

    conf: Path
    node: str
    partition: str
    cpus: int

    @property
    def environment(self) -> tuple[tuple[str, str], ...]:
        """What a compute resource using this cluster sets, as its spec's (name, value) pairs."""
        return (("SLURM_CONF", str(self.conf)),)


@dataclass
class Slurm:
    """A running cluster; `stop` ends its daemons and removes its state."""

    cluster: SlurmCluster
    resources: contextlib.ExitStack

    def stop(self) -> None:
        self.resources.close()


@dataclass(frozen=True)
class SlurmLayout:
    """Where one cluster keeps its files."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def state_save(self) -> Path:
        return self.root / "ctld"

    @property
    def slurmd_spool(self) -> Path:
        return self.root / "slurmd"

    @property
    def controller_pid(self) -> Path:
        return self.root / "slurmctld.pid"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"


def node_memory() -> int:
    """MiB the node offers jobs: most of this machine's memory (Slurm's default, 1 MiB,
    would refuse any job that asks for memory; more than slurmd finds drains the node)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 9 // 10 // 2**20


def slurm_conf(
    *, layout: SlurmLayout, node: str, cpus: int, partition: str, ctld_port: int, slurmd_port: int,
    accounting: slurmdbd.Accounting | None = None,
) -> str:
    """The slurm.conf of a one-node cluster, all paths under `layout`, with `accounting`
    (None: without). As on most sites, a node set DOWN by hand stays down until RESUME
    (ReturnToService=1)."""
    root = layout.root
    recording = accounting.slurm_conf_lines if accounting is not None else (
        "AccountingStorageType=accounting_storage/none\n"
        "JobAcctGatherType=jobacct_gather/none\n")
    return f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={layout.munge_socket},cred_expire=10
StateSaveLocation={layout.state_save}
SlurmdSpoolDir={layout.slurmd_spool}
SlurmctldPidFile={layout.controller_pid}
SlurmdPidFile={root / "slurmd.pid"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
{recording}JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=1
MinJobAge=30
KillWait=5
EnforcePartLimits=ALL
MailProg=/bin/true
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={node_memory()} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1
{preemption_conf(node)}"""


URGENT_PARTITION = "urgent"
"""A partition on the same node whose jobs preempt those of the default one."""


def preemption_conf(node: str) -> str:
    """Preemption by partition: a job of `URGENT_PARTITION` (the higher PriorityTier) that
    needs cores held by jobs of the default partition requeues them (they get SIGTERM, then
    SIGKILL after KillWait; no GraceTime), as sites with a preemptible partition do; a
    requeued job runs again once its credential expires (`cred_expire`, 10 s here, not
    Slurm's 120). Jobs of
    the default partition never preempt each other, so tests that do not use `urgent` see
    no preemption."""
    urgent = f"PartitionName={URGENT_PARTITION} Nodes={node} MaxTime=INFINITE State=UP"
    return f"""\
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{urgent} PriorityTier=2 PreemptMode=OFF
"""


def start(*, partition: str = "debug", timeout: float = 60.0, accounting: bool = True) -> Slurm:
    """Start munged, (with `accounting`) MariaDB and slurmdbd, slurmctld and slurmd; return
    once the node is idle."""
    daemons = [str(SBIN / name) for name in ("munged", "slurmctld", "slurmd")]
    require_programs(*daemons, "scontrol", "sinfo", "setpriv")
    node = socket.gethostname().split(".")[0]  # slurmd's default NodeName
    cpus = len(os.sched_getaffinity(0))
    resources = contextlib.ExitStack()
    try:
        state = statedir.claim("slurm")
        resources.callback(state.release)
        layout = SlurmLayout(root=state.path)
        cluster = SlurmCluster(conf=layout.conf, node=node, partition=partition, cpus=cpus)
        for spool in (layout.state_save, layout.slurmd_spool):
            spool.mkdir(mode=0o755)

        munged = state.start(_munged(layout))
        resources.callback(munged.stop)
        munged.wait_ready(layout.munge_socket.is_socket, timeout=timeout)
        recording = slurmdbd.start(
            conf=layout.conf, cluster=CLUSTER_NAME, munge_socket=layout.munge_socket,
            state=state, stack=resources, timeout=timeout) if accounting else None
        layout.conf.write_text(
            slurm_conf(
                layout=layout,
                node=node,
                cpus=cpus,
                partition=partition,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                accounting=recording,
            )
        )
        layout.conf.chmod(0o644)
        resources.callback(stop_controller, cluster)
        start_controller(cluster, timeout=timeout, state=state)
        slurmd = state.start(_slurm_daemon("slurmd", layout))
        resources.callback(slurmd.stop)
        slurmd.wait_ready(lambda: node_state(cluster) == "idle", timeout=timeout)
    except BaseException:
        resources.close()
        raise
    return Slurm(cluster=cluster, resources=resources)


def start_controller(
    cluster: SlurmCluster, *, timeout: float = 60.0, state: statedir.StateDir | None = None
) -> None:
    """Start slurmctld (again) with the cluster's state; return once it answers. The cluster's
    `stop` ends it, whichever start it came from."""
    layout = SlurmLayout(root=cluster.conf.parent)
    claimed = state or statedir.StateDir(path=layout.root, lock_fd=-1)  # records its pid only
    slurmctld = claimed.start(_slurm_daemon("slurmctld", layout))
    slurmctld.wait_ready(lambda: controller_up(cluster), timeout=timeout)


def stop_controller(cluster: SlurmCluster, grace: float = 10.0) -> None:
    """Stop slurmctld, as an outage would: clients then fail with "Unable to contact slurm
    controller"."""
    pid_file = SlurmLayout(root=cluster.conf.parent).controller_pid
    try:
        pid = int(pid_file.read_text().split()[0])
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ValueError, IndexError):
        return
    if name != "slurmctld":
        return
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)
        with contextlib.suppress(StartupError):
            wait_until(lambda: not statedir.start_time(pid), timeout=grace, what="slurmctld")
            return


def controller_up(cluster: SlurmCluster) -> bool:
    """True when slurmctld answers `scontrol ping`."""
    ping = subprocess.run(
        ["scontrol", "ping"], env=_client_env(cluster), capture_output=True, timeout=10
    )
    return ping.returncode == 0


def node_state(cluster: SlurmCluster) -> str:
    """The node's state as sinfo reports it (`idle`, `mixed`, `down*`…) in the default
    partition (sinfo lists a node once per partition)."""
    result = subprocess.run(
        ["sinfo", "-h", "-N", "-n", cluster.node, "-p", cluster.partition, "-o", "%T"],
        env=_client_env(cluster),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.strip()


def _munged(layout: SlurmLayout) -> Daemon:
    """munged as the munge user, with its socket, pid and seed files in `layout`."""
    munge_dir = layout.munge_dir
    munge_dir.mkdir(mode=0o755)
    shutil.chown(munge_dir, MUNGE_USER, MUNGE_USER)
    argv = [
        "setpriv", f"--reuid={MUNGE_USER}", f"--regid={MUNGE_USER}", "--init-groups",
        str(SBIN / "munged"), "--foreground",
        f"--key-file={MUNGE_KEY}",
        f"--socket={layout.munge_socket}",
        f"--pid-file={munge_dir / 'munged.pid'}",
        f"--seed-file={munge_dir / 'munged.seed'}",
    ]  # fmt: skip
    return Daemon(name="munged", argv=argv, log=layout.root / "munged.out")


def _slurm_daemon(name: str, layout: SlurmLayout) -> Daemon:
    """slurmctld or slurmd in the foreground, logging to stderr (no LogFile configured)."""
    argv = [str(SBIN / name), "-D", "-f", str(layout.conf)]
    return Daemon(name=name, argv=argv, log=layout.root / f"{name}.log")


def _client_env(cluster: SlurmCluster) -> dict[str, str]:
    return {**os.environ, **dict(cluster.environment)}
