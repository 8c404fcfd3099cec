"""One-off HTTP requests as `httpx.get` and its siblings make them (a client for each, no
cookies kept from one to the next), but over one TLS context: httpx builds a context for
each client, about 20 ms of CPU, which in the tests' polling loops came to minutes."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

TLS = ssl.create_default_context()


def request(method: str, url: str, **options: Any) -> httpx.Response:
    """`httpx.request`, verifying with `TLS` unless told otherwise."""
    options.setdefault("verify", TLS)
    return httpx.request(method, url, **options)


def get(url: str, **options: Any) -> httpx.Response:
    """`httpx.get` over `TLS`."""
    return request("GET", url, **options)


def post(url: str, **options: Any) -> httpx.Response:
    """`httpx.post` over `TLS`."""
    return request("POST", url, **options)


def put(url: str, **options: Any) -> httpx.Response:
    """`httpx.put` over `TLS`."""
    return request("PUT", url, **options)


def delete(url: str, **options: Any) -> httpx.Response:
    """`httpx.delete` over `TLS`."""
    return request("DELETE", url, **options)
