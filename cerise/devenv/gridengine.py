"""Son of Grid Engine for the tests: sge_qmaster and sge_execd on this host.

Grid Engine is one system-wide installation (Debian's SGE_ROOT, cell `default`, spool under
/var/spool/gridengine, made by tools/install-system.sh), so one run at a time may use it.
Its daemons run in the foreground (SGE_ND) on ports chosen at run time, which clients then
need as SGE_QMASTER_PORT/SGE_EXECD_PORT in their remote environment, next to
SGE_ROOT/SGE_CELL. The configuration (host aliases, submit and exec host, parallel
environment, queue, a fast scheduler) is applied idempotently at every start.

Tests of outages stop and start the qmaster (`stop_qmaster`, `start_qmaster`); jobs keep
running under execd meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cerise.devenv import statedir
from cerise.devenv.process import Daemon, StartupError, free_port, wait_until
from cerise.devenv.system import require_programs

SGE_ROOT = Path("/var/lib/gridengine")
SGE_CELL = "default"
SBIN = Path("/usr/sbin")
EXECD_SPOOL = Path("/var/spool/gridengine/execd")
"""Debian's execd_spool_dir; execd keeps its pid file in a subdirectory per host."""


@dataclass(frozen=True)
class GridEngineCell:
    """How to use the running cell: client environment and what it offers."""

    root: Path
    cell: str
    host: str
    queue: str
    pe: str
    slots: int
    qmaster_port: int
    execd_port: int
    state: Path | None = None
    """The run's state directory (daemon logs and records)."""
    arch: str = "lx-amd64"
    """The host's architecture in Grid Engine's words: its binaries are in bin/<arch>."""

    @property
    def common(self) -> Path:
        return self.root / self.cell / "common"

    @property
    def environment(self) -> tuple[tuple[str, str], ...]:
        """What a compute resource using this cell sets, as its spec's (name, value) pairs:
        what Grid Engine's own settings.sh sets, its binaries first on PATH. (Debian's
        wrappers in /usr/bin would otherwise run `util/arch`, 35 processes and 50 ms of CPU,
        before every command.)"""
        return (
            ("SGE_ROOT", str(self.root)),
            ("SGE_CELL", self.cell),
            ("SGE_ARCH", self.arch),
            ("SGE_QMASTER_PORT", str(self.qmaster_port)),
            ("SGE_EXECD_PORT", str(self.execd_port)),
            ("PATH", f"{self.root}/bin/{self.arch}:$PATH"),
        )

    def client_env(self) -> dict[str, str]:
        """This process's environment with the cell's, for running its commands here."""
        return {**os.environ, **{name: os.path.expandvars(value)
                                 for name, value in self.environment}}


@dataclass
class GridEngine:
    """A running cell; `stop` ends its daemons and removes the run's state."""

    cell: GridEngineCell
    resources: contextlib.ExitStack

    def stop(self) -> None:
        self.resources.close()


def host_aliases(host: str, resolved: Iterable[str]) -> str:
    """A host_aliases file naming `host` and the other names its address resolves to.

    Where 127.0.0.1 resolves back to `localhost` rather than the host name, qmaster refuses
    clients ("client IP resolved to host name localhost. This is not identical to clients
    host name …") unless the names are declared aliases of one host.
    """
    aliases = [name for name in dict.fromkeys(resolved) if name != host]
    return " ".join([host, *aliases]) + "\n"


def render(settings: Mapping[str, str]) -> str:
    """A qconf object file (`name value` lines) from settings in order."""
    return "".join(f"{name} {value}\n" for name, value in settings.items())


def with_settings(config: str, changes: Mapping[str, str]) -> str:
    """`config` (as printed by `qconf -s…`) with the values of the `changes` keys replaced."""
    lines = []
    for line in config.splitlines():
        name = line.split(maxsplit=1)[0] if line.strip() else ""
        lines.append(f"{name} {changes[name]}" if name in changes else line)
    return "\n".join(lines) + "\n"


def exec_host(host: str) -> dict[str, str]:
    return {
        "hostname": host,
        "load_scaling": "NONE",
        "complex_values": "NONE",
        "user_lists": "NONE",
        "xuser_lists": "NONE",
        "projects": "NONE",
        "xprojects": "NONE",
        "usage_scaling": "NONE",
        "report_variables": "NONE",
    }


def parallel_environment(name: str) -> dict[str, str]:
    """A PE that grants all slots of a job on one host (`-pe NAME N` gives NSLOTS=N)."""
    return {
        "pe_name": name,
        "slots": "999",
        "user_lists": "NONE",
        "xuser_lists": "NONE",
        "start_proc_args": "NONE",
        "stop_proc_args": "NONE",
        "allocation_rule": "$pe_slots",
        "control_slaves": "FALSE",
        "job_is_first_task": "TRUE",
        "urgency_slots": "min",
        "accounting_summary": "FALSE",
        "qsort_args": "NONE",
    }


def queue(*, name: str, host: str, slots: int, pe: str) -> dict[str, str]:
    """Grid Engine's default queue template with our host, slots, PE and bash.

    No load threshold: the test machine is busy, and an overloaded queue would stop
    taking jobs.
    """
    limits = {f"{kind}_{limit}": "INFINITY" for limit in _LIMITS for kind in ("s", "h")}
    return {
        "qname": name,
        "hostlist": host,
        "seq_no": "0",
        "load_thresholds": "NONE",
        "suspend_thresholds": "NONE",
        "nsuspend": "1",
        "suspend_interval": "00:05:00",
        "priority": "0",
        "min_cpu_interval": "00:05:00",
        "processors": "UNDEFINED",
        "qtype": "BATCH INTERACTIVE",
        "ckpt_list": "NONE",
        "pe_list": pe,
        "rerun": "FALSE",
        "slots": str(slots),
        "tmpdir": "/tmp",
        "shell": "/bin/bash",
        "prolog": "NONE",
        "epilog": "NONE",
        "shell_start_mode": "posix_compliant",
        "starter_method": "NONE",
        "suspend_method": "NONE",
        "resume_method": "NONE",
        "terminate_method": "NONE",
        "notify": "00:00:60",
        "owner_list": "NONE",
        "user_lists": "NONE",
        "xuser_lists": "NONE",
        "subordinate_list": "NONE",
        "complex_values": "NONE",
        "projects": "NONE",
        "xprojects": "NONE",
        "calendar": "NONE",
        "initial_state": "default",
        **limits,
    }


_LIMITS = ("rt", "cpu", "fsize", "data", "stack", "core", "rss", "vmem")

FAST_SCHEDULER = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
"""The default interval is 15 s, which a job would sit out in `qw`."""

EXECD_RECEIVE = 60.0
"""Seconds sge_execd waits for the qmaster's answer to its registration."""

FAST_REPORTS = {"load_report_time": "00:00:05"}
"""The execution daemon hears of a rescheduled job (`qmod -rj`) at its next load report, and
the rerun starts a report later: with the default 40 s, up to 80 s each."""


def start(*, queue_name: str = "all.q", pe: str = "smp", timeout: float = 60.0) -> GridEngine:
    """Configure and start the cell; return once the queue on this host takes jobs."""
    require_programs(str(SBIN / "sge_qmaster"), str(SBIN / "sge_execd"), "qconf", "qstat")
    host = socket.gethostname()
    resources = contextlib.ExitStack()
    try:
        state = statedir.claim("gridengine", exclusive=True)
        resources.callback(state.release)
        cell = GridEngineCell(
            root=SGE_ROOT,
            cell=SGE_CELL,
            host=host,
            queue=queue_name,
            pe=pe,
            slots=len(os.sched_getaffinity(0)),
            qmaster_port=free_port(),
            execd_port=free_port(),
            state=state.path,
            arch=subprocess.run([str(SGE_ROOT / "util" / "arch")], capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip(),
        )
        _stop_leftovers(cell)
        _write_host_files(cell)
        # At the end qmaster is killed: its clean shutdown takes 10 s, the last of a test
        # session's, and a killed one recovers its spool at the next start (0.3-0.9 s).
        resources.callback(kill_qmaster, cell)
        start_qmaster(cell, timeout=timeout, state=state)
        configure(cell)
        execd = state.start(_daemon("sge_execd", cell, state.path))
        resources.callback(execd.stop)
        execd.wait_ready(lambda: queue_available(cell), timeout=timeout)
    except BaseException:
        resources.close()
        raise
    return GridEngine(cell=cell, resources=resources)


def start_qmaster(
    cell: GridEngineCell, *, timeout: float = 60.0, state: statedir.StateDir | None = None
) -> None:
    """Start sge_qmaster (again); return once it answers and, where sge_execd runs, once
    that has registered again (its queue reports load), as an outage's end would be seen.
    The cell's `stop` ends it, whichever start it came from."""
    assert cell.state is not None, "the cell was not started by `start`"
    claimed = state or statedir.StateDir(path=cell.state, lock_fd=-1)  # records its pid only
    qmaster = claimed.start(_daemon("sge_qmaster", cell, cell.state))
    qmaster.wait_ready(lambda: _qconf(cell, "-sh").returncode == 0, timeout=timeout)
    if _running(_pid_files(cell)["sge_execd"], "sge_execd") is not None:
        # a registration it tried while the qmaster was down waits out a 60 s receive
        # timeout first; a job sent to it meanwhile stays in `t`
        wait_until(lambda: queue_available(cell), timeout=timeout + EXECD_RECEIVE,
                   what="sge_execd registering again", alive=qmaster.alive, interval=0.5)


def stop_qmaster(cell: GridEngineCell, grace: float = 30.0) -> None:
    """Stop sge_qmaster (SIGTERM, then SIGKILL after `grace` s), as an outage would:
    clients then fail with "unable to contact qmaster"."""
    pid_file = _pid_files(cell)["sge_qmaster"]
    _signal_if_running(pid_file, "sge_qmaster", signal.SIGTERM)
    with contextlib.suppress(StartupError):
        _wait_gone(pid_file, "sge_qmaster", grace)
        return
    _kill_if_running(pid_file, "sge_qmaster")


def kill_qmaster(cell: GridEngineCell) -> None:
    """SIGKILL sge_qmaster, if it runs, and wait until it is gone."""
    _kill_if_running(_pid_files(cell)["sge_qmaster"], "sge_qmaster")


def configure(cell: GridEngineCell) -> None:
    """Make this host a submit and exec host with a PE, a queue and a fast scheduler."""
    if cell.host not in _qconf_list(cell, "-ss"):
        _qconf_checked(cell, "-as", cell.host)
    if cell.host not in _qconf_list(cell, "-sel"):
        _qconf_file(cell, "-Ae", exec_host(cell.host))
    pe_verb = "-Mp" if cell.pe in _qconf_list(cell, "-spl") else "-Ap"
    _qconf_file(cell, pe_verb, parallel_environment(cell.pe))
    queue_verb = "-Mq" if cell.queue in _qconf_list(cell, "-sql") else "-Aq"
    _qconf_file(
        cell, queue_verb, queue(name=cell.queue, host=cell.host, slots=cell.slots, pe=cell.pe)
    )
    scheduler = _qconf_checked(cell, "-ssconf").stdout
    wanted = with_settings(scheduler, FAST_SCHEDULER)
    if wanted != scheduler:
        _qconf_text(cell, "-Msconf", wanted)
    overall = _qconf_checked(cell, "-sconf").stdout
    wanted = with_settings(overall, FAST_REPORTS)
    if wanted != overall:
        _qconf_text(cell, "-Mconf", wanted, name="global")


def queue_available(cell: GridEngineCell) -> bool:
    """True once the queue instance on the host reports load and has no state flags.

    Until execd reports, `qstat -f` shows the instance as `au` (alarm, unreachable).
    """
    listing = subprocess.run(
        ["qstat", "-f", "-q", f"{cell.queue}@{cell.host}"],
        env=cell.client_env(),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    for line in listing.splitlines():
        fields = line.split()
        if fields and fields[0] == f"{cell.queue}@{cell.host}":
            return len(fields) == 5 and fields[3] != "-NA-"
    return False


def _write_host_files(cell: GridEngineCell) -> None:
    """act_qmaster and host_aliases for the current host name (it may differ from install time)."""
    try:
        primary, aliases, _ = socket.gethostbyaddr(socket.gethostbyname(cell.host))
        resolved = [primary, *aliases]
    except OSError:  # no (reverse) resolution: nothing to alias
        resolved = []
    _write_if_changed(cell.common / "act_qmaster", cell.host + "\n")
    _write_if_changed(cell.common / "host_aliases", host_aliases(cell.host, resolved))


def _write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    path.write_text(text)
    path.chmod(0o644)


def _stop_leftovers(cell: GridEngineCell) -> None:
    """Kill Grid Engine daemons that were not started by a run of ours (init scripts, by hand).

    Those of crashed runs were already reaped with their state directories. A clean qmaster
    shutdown takes ~10 s; a killed one recovers its Berkeley DB spool at the next start.
    """
    for name, pid_file in _pid_files(cell).items():
        _kill_if_running(pid_file, name)


def _pid_files(cell: GridEngineCell) -> dict[str, Path]:
    bootstrap = _settings((cell.common / "bootstrap").read_text())
    return {
        "sge_qmaster": Path(bootstrap["qmaster_spool_dir"]) / "qmaster.pid",
        "sge_execd": EXECD_SPOOL / cell.host / "execd.pid",
    }


def _running(pid_file: Path, name: str) -> int | None:
    """The pid `pid_file` names if that process is still the program `name`."""
    try:
        pid = int(pid_file.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if comm == name else None


def _signal_if_running(pid_file: Path, name: str, signum: signal.Signals) -> None:
    pid = _running(pid_file, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_gone(pid_file: Path, name: str, timeout: float) -> None:
    pid = _running(pid_file, name)
    if pid is not None:
        wait_until(lambda: not statedir.start_time(pid), timeout=timeout, what=f"{name} to end")


def _kill_if_running(pid_file: Path, name: str) -> None:
    """SIGKILL the process `pid_file` names if it is still the program `name`; wait for it."""
    _signal_if_running(pid_file, name, signal.SIGKILL)
    _wait_gone(pid_file, name, 10)


def _settings(text: str) -> dict[str, str]:
    pairs = (line.split(maxsplit=1) for line in text.splitlines() if not line.startswith("#"))
    return {pair[0]: pair[1].strip() for pair in pairs if len(pair) == 2}


def _daemon(name: str, cell: GridEngineCell, state: Path) -> Daemon:
    env = {**cell.client_env(), "SGE_ND": "true"}
    return Daemon(name=name, argv=[str(SBIN / name)], log=state / f"{name}.log", env=env)


def _qconf(cell: GridEngineCell, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qconf", *args], env=cell.client_env(), capture_output=True, text=True, timeout=30
    )


def _qconf_checked(cell: GridEngineCell, *args: str) -> subprocess.CompletedProcess[str]:
    result = _qconf(cell, *args)
    if result.returncode != 0:
        raise StartupError(
            f"grid engine: qconf {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def _qconf_list(cell: GridEngineCell, flag: str) -> list[str]:
    """Names listed by `qconf -s…l`-style flags; empty when qconf reports none defined."""
    result = _qconf(cell, flag)
    return result.stdout.split() if result.returncode == 0 else []


def _qconf_file(cell: GridEngineCell, verb: str, settings: Mapping[str, str]) -> None:
    _qconf_text(cell, verb, render(settings))


def _qconf_text(cell: GridEngineCell, verb: str, text: str, name: str = "object") -> None:
    """Run `qconf VERB FILE` with `text` in a temporary file named `name` (qconf reads
    objects from files, and takes a configuration's name from its file's)."""
    with tempfile.TemporaryDirectory(prefix="cerise-qconf-") as directory:
        path = Path(directory) / name
        path.write_text(text)
        _qconf_checked(cell, verb, str(path))
