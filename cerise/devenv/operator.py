"""The operator as a separate process, as in production: start, kill -9, restart."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cerise.devenv.process import Daemon, free_port

IDENTITY = ("cerise-operator", ("cerise:operators",))
"""The operator's own user and group: it runs with ClusterRole `cerise-operator` only."""


@dataclass
class OperatorProcess:
    """`kopf run` of `cerise.operator.handlers`, watching all namespaces."""

    kubeconfig: Path
    exchange_dir: Path
    exchange_url: str
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    daemon: Daemon | None = None
    starts: int = 0
    health_url: str = ""
    """kopf's liveness endpoint of the running process (with the probes' results)."""

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until kopf reports itself alive."""
        port = free_port()
        self.health_url = f"http://127.0.0.1:{port}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "CERISE_EXCHANGE_DIR": str(self.exchange_dir),
            "CERISE_EXCHANGE_URL": self.exchange_url,
            "CERISE_SHARED_EXCHANGE": "1",  # one user owns the namespaces of a development setup
            "CERISE_PROJECT_PATHS": str(Path(__file__).resolve().parents[2] / "specialisations"),
            **self.extra_env,
        }
        self.starts += 1
        self.daemon = Daemon(f"cerise operator (start {self.starts})", [
            sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
            f"--liveness={self.health_url}", "-m", "cerise.operator.handlers",
        ], log=self.log, env=env).start()
        self.daemon.wait_answering(self.health_url, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.daemon is not None and self.daemon.process is not None:
            self.daemon.process.kill()
            self.daemon.process.wait()

    def stop(self) -> None:
        """A clean shutdown."""
        if self.daemon is not None:
            self.daemon.stop(grace=30)
