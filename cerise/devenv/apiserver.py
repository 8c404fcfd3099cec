"""The apiserver as a separate process, as in production."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cerise.devenv.process import Daemon

IDENTITY = ("cerise-apiserver", ("cerise:apiservers",))
"""The apiserver's own user and group: it runs with ClusterRole `cerise-apiserver` only."""


@dataclass
class ApiserverProcess:
    """`python -m cerise.apiserver` with the given settings (see `cerise.apiserver.settings`)."""

    kubeconfig: Path
    exchange_dir: Path
    exchange_url: str
    port: int
    log: Path
    auth: str = "none"
    namespace: str = "default"
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)
    daemon: Daemon | None = None

    @property
    def url(self) -> str:
        """Where it serves."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until it answers."""
        env = {
            **os.environ, "KUBECONFIG": str(self.kubeconfig),
            "CERISE_EXCHANGE_DIR": str(self.exchange_dir),
            "CERISE_EXCHANGE_URL": self.exchange_url,
            "CERISE_AUTH": self.auth, "CERISE_NAMESPACE": self.namespace, **self.extra_env,
        }
        self.daemon = Daemon(f"cerise apiserver ({self.auth}, port {self.port})", [
            sys.executable, "-m", "cerise.apiserver", "--host", self.host,
            "--port", str(self.port)], log=self.log, env=env).start()
        self.daemon.wait_answering(f"{self.url}/healthz", timeout=timeout)

    def stop(self) -> None:
        """A clean shutdown."""
        if self.daemon is not None:
            self.daemon.stop(grace=10)
