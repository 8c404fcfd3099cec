"""`python -m cerise.apiserver`: serve the REST APIs (settings from the environment)."""

from __future__ import annotations

import argparse

import uvicorn

from cerise.apiserver import logs, metrics
from cerise.apiserver.app import create_app
from cerise.apiserver.settings import Settings

DEFAULT_PORT = 29593
"""The original Cerise's port."""


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the apiserver until interrupted. Forwarded headers are left to
    `cerise.apiserver.origin_guard`, which believes only the configured proxies."""
    settings = Settings.from_env()
    if settings.metrics_port:
        metrics.serve(settings.metrics_address or host, settings.metrics_port)
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=False,
                log_config=logs.CONFIG, access_log=False)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m cerise.apiserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
