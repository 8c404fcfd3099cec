"""The apiserver's configuration, read once from the environment.

* ``CERISE_AUTH``: ``none`` (single-user: one namespace, no credentials, the default) or
  ``kubernetes`` (cluster: a bearer token on every request, Kubernetes RBAC decides).
* ``CERISE_NAMESPACE``: the namespace served without a ``/ns/<namespace>`` prefix
  (single-user: the only one; default ``default``).
* ``CERISE_DEFAULT_RESOURCE``: the ComputeResource for jobs that name none (default: the
  only one in the job's namespace).
* ``CERISE_EXCHANGE_DIR`` / ``CERISE_EXCHANGE_URL``: the file exchange, as the operator
  has it (see `cerise.model.exchange.Layout`).
* ``CERISE_MAX_REQUEST_BYTES``: the largest JSON or form body accepted (default 8 MiB).
* ``CERISE_CACHE_STALE_SECONDS``: how long a cache may fail to follow the Kubernetes API
  before ``/healthz`` answers 503 (default 20).
* ``CERISE_ARCHIVE_URL``: the archive of finished jobs (a PostgreSQL URL), served with the
  live ones (`cerise.apiserver.history`); none by default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cerise.model.exchange import Layout


class AuthMode(StrEnum):
    """How callers are identified."""

    NONE = "none"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class Settings:
    """What the apiserver serves, and to whom."""

    exchange: Layout
    auth: AuthMode = AuthMode.NONE
    namespace: str = "default"
    default_resource: str | None = None
    max_request_bytes: int = 8 << 20
    cache_stale_seconds: float = 20.0
    archive_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings given by environment variables (`os.environ` by default)."""
        env = os.environ if env is None else env
        try:
            auth = AuthMode(env.get("CERISE_AUTH", "none"))
        except ValueError:
            raise ValueError(
                f"CERISE_AUTH must be 'none' or 'kubernetes', not {env['CERISE_AUTH']!r}"
            ) from None
        settings = cls(
            exchange=Layout(
                root=Path(env.get("CERISE_EXCHANGE_DIR", "/var/lib/cerise/files")),
                url=env.get("CERISE_EXCHANGE_URL", "http://localhost:29593/files"),
            ),
            auth=auth,
            namespace=env.get("CERISE_NAMESPACE", "default"),
            default_resource=env.get("CERISE_DEFAULT_RESOURCE") or None,
            max_request_bytes=int(env.get("CERISE_MAX_REQUEST_BYTES", str(8 << 20))),
            cache_stale_seconds=float(env.get("CERISE_CACHE_STALE_SECONDS", "20")),
            archive_url=env.get("CERISE_ARCHIVE_URL", "").strip() or None,
        )
        if settings.auth is AuthMode.KUBERNETES and not settings.exchange.per_namespace:
            raise ValueError(
                "with CERISE_AUTH=kubernetes each namespace needs its own file exchange: put "
                "{namespace} in CERISE_EXCHANGE_URL, e.g. https://cerise.example.org/ns/"
                "{namespace}/files")
        return settings
