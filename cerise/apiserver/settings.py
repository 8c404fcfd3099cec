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
* ``CERISE_MAX_UPLOAD_BYTES``: the largest file one WebDAV PUT may store (default 8 GiB);
  ``CERISE_EXCHANGE_QUOTA_BYTES``: what a namespace's ``input/`` may hold (default 64 GiB).
* ``CERISE_PUBLIC_HOSTS``: host names (or ``*.domain``) the service is reached under,
  besides ``localhost``, ``127.0.0.1``, ``[::1]`` and the exchange URL's host; any other
  ``Host`` is refused (see `cerise.apiserver.origin_guard`).
* ``CERISE_ALLOWED_ORIGINS``: web origins (``https://app.example.org``) other than the
  service's own whose pages may change state (submit, cancel, delete, upload).
* ``CERISE_TRUSTED_PROXIES``: addresses or networks of the reverse proxies whose
  ``X-Forwarded-Proto``, ``-Host`` and ``-For`` are believed (default: none).
* ``CERISE_METRICS_PORT``: serve ``/metrics`` on this port of its own instead of the API's
  (cluster mode always does, on 29594 unless set, so tenants do not read them);
  ``CERISE_METRICS_ADDRESS``: its address (default: the API's).
"""

from __future__ import annotations

import ipaddress
import os
import re
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
    max_upload_bytes: int = 8 << 30
    quota_bytes: int = 64 << 30
    public_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    metrics_port: int | None = None
    metrics_address: str | None = None

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
            max_request_bytes=_number(env, "CERISE_MAX_REQUEST_BYTES", 8 << 20),
            cache_stale_seconds=float(env.get("CERISE_CACHE_STALE_SECONDS", "20")),
            archive_url=env.get("CERISE_ARCHIVE_URL", "").strip() or None,
            max_upload_bytes=_number(env, "CERISE_MAX_UPLOAD_BYTES", 8 << 30),
            quota_bytes=_number(env, "CERISE_EXCHANGE_QUOTA_BYTES", 64 << 30),
            public_hosts=frozenset(
                word.lower().rstrip(".") for word in _words(env, "CERISE_PUBLIC_HOSTS")),
            allowed_origins=frozenset(
                word.lower().rstrip("/") for word in _words(env, "CERISE_ALLOWED_ORIGINS")),
            trusted_proxies=tuple(_network(word) for word in _words(env, "CERISE_TRUSTED_PROXIES")),
            metrics_port=(_number(env, "CERISE_METRICS_PORT", DEFAULT_METRICS_PORT)
                          if auth is AuthMode.KUBERNETES or env.get("CERISE_METRICS_PORT")
                          else None),
            metrics_address=env.get("CERISE_METRICS_ADDRESS") or None,
        )
        if settings.auth is AuthMode.KUBERNETES and not settings.exchange.per_namespace:
            raise ValueError(
                "with CERISE_AUTH=kubernetes each namespace needs its own file exchange: put "
                "{namespace} in CERISE_EXCHANGE_URL, e.g. https://cerise.example.org/ns/"
                "{namespace}/files")
        return settings


DEFAULT_METRICS_PORT = 29594
"""Where cluster mode serves ``/metrics`` unless ``CERISE_METRICS_PORT`` says."""


def _number(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number, not {raw[:50]!r}")
    return int(raw)


def _words(env: Mapping[str, str], name: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", env.get(name, "")) if word]


def _network(word: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(word, strict=False)
    except ValueError:
        raise ValueError(
            f"CERISE_TRUSTED_PROXIES: {word[:100]!r} is not an address or network") from None
