"""Private state directories for local daemons, and reclaiming the ones a crashed run left.

A state directory holds a lock file that the claiming process keeps locked (`flock`) for as
long as it lives, plus the pid and start time of every daemon started for it. When a later
run finds a directory of the same component whose lock it can take, the owner is gone: the
daemons recorded there are killed and the directory is removed, after whatever is mounted
below it (a kubelet's volumes, overlays and network namespaces), which would otherwise keep
it there for good. A directory still locked belongs to a live run and is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cerise.devenv.process import Daemon, StartupError, wait_until

DEFAULT_BASE = Path("/run/cerise-devenv")
"""Root-owned and not world-writable, so sshd's StrictModes accepts files kept below it."""

_LOCK = ".lock"
_PIDS = ".pids"


@dataclass
class StateDir:
    """A claimed state directory; `release` removes it."""

    path: Path
    lock_fd: int

    def start(self, daemon: Daemon) -> Daemon:
        """Start `daemon` and record it, so that a later run can kill it if this one crashes."""
        daemon.start()
        record = self.path / _PIDS / f"{daemon.name}.pid"
        record.parent.mkdir(exist_ok=True)
        record.write_text(f"{daemon.pid} {start_time(daemon.pid)}\n")
        return daemon

    def release(self) -> None:
        """Remove the directory (unmounting what is mounted below it) and drop the lock."""
        _remove(self.path)
        os.close(self.lock_fd)


def claim(component: str, *, exclusive: bool = False, base: Path = DEFAULT_BASE) -> StateDir:
    """Reap stale directories of `component` under `base`, then create and lock a new one.

    With `exclusive`, a live directory of the same component (another run using a
    system-wide service) is a StartupError. The new directory is mode 0755 so that
    unprivileged users can read what a component publishes there (a client configuration,
    a socket directory).
    """
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    live = reap_stale(component, base=base)
    if exclusive and live:
        raise StartupError(f"{component} is in use by another run (state in {live[0]})")
    path = Path(tempfile.mkdtemp(prefix=f"{component}-", dir=base))
    path.chmod(0o755)
    # Locked before it takes its name: a run reaping at the same moment (another pytest-xdist
    # worker) must never find this directory with its lock file there but not yet locked.
    unnamed = path / f"{_LOCK}.new"
    fd = os.open(unnamed, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    unnamed.rename(path / _LOCK)
    return StateDir(path=path, lock_fd=fd)


def reap_stale(component: str, *, base: Path = DEFAULT_BASE) -> list[Path]:
    """Kill the daemons of, and remove, every unlocked state directory of `component`.

    Returns the directories that are still locked by live runs.
    """
    live = []
    for path in base.glob(f"{component}-*"):
        try:
            fd = os.open(path / _LOCK, os.O_RDWR)
        except FileNotFoundError:
            # Being claimed by a live run right now, or half-removed: not ours to judge.
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            live.append(path)
            continue
        for record in (path / _PIDS).glob("*.pid"):
            match record.read_text().split():
                case [pid, started]:
                    kill_group_if_same(int(pid), started)
                case _:  # the daemon had already exited when it was recorded
                    pass
        _remove(path)
        os.close(fd)
    return live


def _remove(path: Path) -> None:
    """Unmount everything mounted below `path`, deepest first, then remove it."""
    prefix = str(path) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False,
                       timeout=60)
    shutil.rmtree(path, ignore_errors=True)


def kill_group_if_same(pid: int, started: str) -> None:
    """SIGKILL the process group led by `pid`, unless the pid now names another process."""
    if start_time(pid) != started:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: start_time(pid) != started, timeout=10, what=f"stale process {pid}")


def start_time(pid: int) -> str:
    """The start time of a process (clock ticks since boot), or "" if it is gone or a zombie.

    Zombies count as gone: orphans are not always reaped promptly in containers.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    state, start = fields[0], fields[19]
    return "" if state in ("Z", "X") else start
