"""Process plumbing for the local environment: free ports, daemons, readiness polling."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class StartupError(RuntimeError):
    """A component of the local environment did not start; the message names it, shows its log."""


NODE_PORTS = 30000
"""Where Kubernetes' NodePort range (30000-32767 by default) begins."""
_CLAIMS = Path(tempfile.gettempdir()) / "cerise-ports"
_claimed: list[int] = []  # descriptors of this process's claims, held until it exits


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out for outgoing connections (32768 if unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and stays this process's until it exits.

    The port lies below the kernel's ephemeral range, so no outgoing connection takes it
    between this call and the daemon's bind, and below Kubernetes' NodePort range, which a
    test node's kube-proxy redirects; an flock on a file per port keeps two processes
    (parallel test workers, a second `./dev up`) from being handed the same one.
    """
    _CLAIMS.mkdir(mode=0o1777, exist_ok=True)
    low, high = 10000, max(10001, min(NODE_PORTS, _ephemeral_floor()))
    for _ in range(1000):
        port = low + secrets.randbelow(high - low)
        fd = os.open(_CLAIMS / str(port), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            os.close(fd)
            continue
        _claimed.append(fd)
        return port
    raise StartupError(f"no free TCP port between {low} and {high} on 127.0.0.1")


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `condition` until it holds; raise StartupError naming `what` on timeout or death.

    `alive`, when given, is checked on every round so that a crashed process fails fast
    instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if alive is not None and not alive():
            raise StartupError(_failure(f"{what} exited during start-up", log))
        if time.monotonic() > deadline:
            raise StartupError(_failure(f"{what} not ready after {timeout:g} s", log))
        time.sleep(interval)


def _failure(message: str, log: Path | None) -> str:
    if log is None:
        return message
    return f"{message}; end of {log}:\n{log_tail(log)}"


@dataclass
class Daemon:
    """A long-running child process in its own session, logging to a file."""

    name: str
    argv: Sequence[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Daemon:
        """Start the process with stdout and stderr appended to `log`."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll `condition` until it holds, failing fast if the process dies."""
        wait_until(condition, timeout=timeout, what=self.name, log=self.log, alive=self.alive)

    def wait_answering(
        self, url: str, accept: Callable[[httpx.Response], bool] = lambda answer: answer.is_success,
        *, verify: ssl.SSLContext | bool = True, timeout: float = 60.0,
    ) -> None:
        """Poll `url` until `accept` holds of the answer, failing fast if the process dies.
        One HTTP client for all the polls: a client of its own for each would cost 20 ms of
        CPU to build its TLS context, ten times a second, beside the process starting up."""
        with httpx.Client(verify=verify, timeout=2.0) as client:
            self.wait_ready(lambda: accept(client.get(url)), timeout=timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after `grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
