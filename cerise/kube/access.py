"""Acting as the caller: API clients that carry a caller's bearer token, and access checks.

In cluster mode the apiserver writes with the caller's own token, so Kubernetes RBAC
decides what each caller may do; reads come from a shared cache, and `Callers.allowed`
asks the API server (a SelfSubjectAccessReview made with the caller's token) whether
the caller may read what the cache holds. Answers and clients are kept for a short
while, keyed by a hash of the token (the token itself is never logged or kept as a key).

Bogus tokens cost little and reach the API server at a bounded rate: reviews go through
one shared connection with the token as a header (a client of its own, TLS set up anew,
is made only for a token the API server accepted, for its writes); a refused token is
refused here for `REJECTED_SECONDS` without asking again; reviews not answered from
memory are limited to `REVIEWS_PER_SECOND` (`Busy` beyond that).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, TypeVar

import httpx
from lightkube import AsyncClient
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Context, User

from cerise.kube.jobs import GROUP

_T = TypeVar("_T")

ANSWER_SECONDS = 30.0
"""How long an access check's answer is reused."""
MAX_CALLERS = 256
"""Callers whose clients and answers are kept at once."""
REJECTED_SECONDS = 30.0
"""How long a refused token is refused without asking the API server."""
MAX_REJECTED = 4096
"""Refused tokens remembered at once."""
REVIEWS_PER_SECOND = 20.0
REVIEW_BURST = 40
"""Access reviews that may be made at once, before the rate applies."""
REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

Answers = dict[tuple[str, str, str], tuple[float, bool]]


class NotAuthenticated(Exception):
    """The API server did not accept the caller's token."""


class Busy(Exception):
    """More access reviews are asked for than `REVIEWS_PER_SECOND`; try again shortly."""


class _Budget:
    """A token bucket: `rate` a second, at most `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.left, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.left = min(self.burst, self.left + (now - self.at) * self.rate)
        self.at = now
        if self.left < 1:
            return False
        self.left -= 1
        return True


class Callers:
    """API clients acting as callers, made from the apiserver's own cluster configuration."""

    def __init__(self, own: SingleConfig) -> None:
        self._own = own
        # The cluster's TLS settings without the apiserver's own credentials.
        self._reviewer = httpx.AsyncClient(
            base_url=own.cluster.server, timeout=30,
            verify=client_adapter.verify_cluster(own.cluster, User(), own.abs_file))
        self._answers: OrderedDict[str, Answers] = OrderedDict()
        self._clients: OrderedDict[str, AsyncClient] = OrderedDict()
        self._rejected: OrderedDict[str, float] = OrderedDict()
        self._reviews = _Budget(REVIEWS_PER_SECOND, REVIEW_BURST)

    def client(self, token: str) -> AsyncClient:
        """An API client that acts as the holder of `token`, which `allowed` has accepted
        (NotAuthenticated if it has not)."""
        digest = _digest(token)
        if digest not in self._answers:
            raise NotAuthenticated("the bearer token has not been checked")
        client = self._clients.get(digest)
        if client is None:
            config = KubeConfig(
                clusters={"cluster": self._own.cluster},
                contexts={"caller": Context(cluster="cluster", user="caller")},
                users={"caller": User(token=token)}, current_context="caller",
                fname=self._own.fname,
            )
            client = AsyncClient(config=config, field_manager="cerise-apiserver")
            self._clients[digest] = client
            _bound(self._clients, MAX_CALLERS)
        self._clients.move_to_end(digest)
        return client

    async def allowed(self, token: str, namespace: str, verb: str,
                      resource: str = "workflowjobs") -> bool:
        """Whether the holder of `token` may `verb` Cerise `resource`s in `namespace`;
        NotAuthenticated if the token is refused, Busy if too many reviews are asked for."""
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise NotAuthenticated("the bearer token is not one the API server gives out")
        digest = _digest(token)
        refused_at = self._rejected.get(digest)
        if refused_at is not None:
            if time.monotonic() - refused_at < REJECTED_SECONDS:
                raise NotAuthenticated("the bearer token was not accepted")
            del self._rejected[digest]
        key = (namespace, verb, resource)
        cached = self._answers.get(digest, {}).get(key)
        if cached is not None and time.monotonic() - cached[0] < ANSWER_SECONDS:
            return cached[1]
        if not self._reviews.take():
            raise Busy("too many access checks at once; try again in a second")
        answer = await self._review(token, key)
        if answer is None:
            self._answers.pop(digest, None)
            self._rejected[digest] = time.monotonic()
            _bound(self._rejected, MAX_REJECTED)
            raise NotAuthenticated("the bearer token was not accepted")
        answers = self._answers.setdefault(digest, {})
        answers[key] = (time.monotonic(), answer)
        self._answers.move_to_end(digest)
        _bound(self._answers, MAX_CALLERS)
        return answer

    async def close(self) -> None:
        """Close every client."""
        while self._clients:
            _, client = self._clients.popitem()
            await client.close()
        await self._reviewer.aclose()

    async def _review(self, token: str, key: tuple[str, str, str]) -> bool | None:
        """The API server's answer to a SelfSubjectAccessReview asked with `token`; None if
        it did not accept the token."""
        namespace, verb, resource = key
        body: dict[str, Any] = {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"group": GROUP, "resource": resource,
                                            "verb": verb, "namespace": namespace}}}
        answer = await self._reviewer.post(
            REVIEWS, json=body, headers={"Authorization": f"Bearer {token}"})
        if answer.status_code == 401:
            return None
        answer.raise_for_status()
        return bool((answer.json().get("status") or {}).get("allowed"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bound(kept: OrderedDict[str, _T], limit: int) -> None:
    """Drop the oldest entries over `limit`. A dropped client may still serve a request in
    flight: it is left to be collected rather than closed under that request."""
    while len(kept) > limit:
        kept.popitem(last=False)
