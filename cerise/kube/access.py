"""Acting as the caller: API clients that carry a caller's bearer token, and access checks.

In cluster mode the apiserver writes with the caller's own token, so Kubernetes RBAC
decides what each caller may do; reads come from a shared cache, and `Callers.allowed`
asks the API server (a SelfSubjectAccessReview made with the caller's token) whether
the caller may read what the cache holds. Answers and clients are kept for a short
while, keyed by a hash of the token (the token itself is never logged or kept as a key).

Bogus tokens cost the API server nothing beyond a bounded rate: a token it refused is
refused here for `REJECTED_SECONDS` without asking again, reviews not answered from
memory are limited to `REVIEWS_PER_SECOND` (`Busy` beyond that), and a token becomes one
of the `MAX_CALLERS` kept only once the API server has accepted it, so a flood of new
tokens cannot push out the callers who are really working.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Context, User
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview

from cerise.kube.jobs import GROUP

_T = TypeVar("_T")

ANSWER_SECONDS = 30.0
"""How long an access check's answer is reused."""
MAX_CALLERS = 256
"""Callers whose clients are kept open at once."""
MAX_PENDING = 64
"""Clients of tokens not yet accepted, kept at once."""
REJECTED_SECONDS = 30.0
"""How long a refused token is refused without asking the API server."""
MAX_REJECTED = 4096
"""Refused tokens remembered at once."""
REVIEWS_PER_SECOND = 20.0
REVIEW_BURST = 40
"""Access reviews that may be made at once, before the rate applies."""


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


@dataclass
class _Caller:
    client: AsyncClient
    answers: dict[tuple[str, str, str], tuple[float, bool]] = field(default_factory=dict)


class Callers:
    """API clients acting as callers, made from the apiserver's own cluster configuration."""

    def __init__(self, own: SingleConfig) -> None:
        self._own = own
        self._callers: OrderedDict[str, _Caller] = OrderedDict()
        self._pending: OrderedDict[str, _Caller] = OrderedDict()
        self._rejected: OrderedDict[str, float] = OrderedDict()
        self._reviews = _Budget(REVIEWS_PER_SECOND, REVIEW_BURST)

    def client(self, token: str) -> AsyncClient:
        """An API client that acts as the holder of `token`; NotAuthenticated if the API
        server refused the token a moment ago."""
        return self._caller(_digest(token), token).client

    async def allowed(self, token: str, namespace: str, verb: str,
                      resource: str = "workflowjobs") -> bool:
        """Whether the holder of `token` may `verb` Cerise `resource`s in `namespace`;
        NotAuthenticated if the token is refused, Busy if too many reviews are asked for."""
        digest = _digest(token)
        caller = self._caller(digest, token)
        key = (namespace, verb, resource)
        cached = caller.answers.get(key)
        if cached is not None and time.monotonic() - cached[0] < ANSWER_SECONDS:
            return cached[1]
        if not self._reviews.take():
            raise Busy("too many access checks at once; try again in a second")
        review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
            resourceAttributes=ResourceAttributes(
                group=GROUP, resource=resource, verb=verb, namespace=namespace)))
        try:
            answer = await caller.client.create(review)
        except ApiError as error:
            if error.status.code == 401:
                self._reject(digest)
                raise NotAuthenticated("the bearer token was not accepted") from None
            raise
        allowed = bool(answer.status and answer.status.allowed)
        caller.answers[key] = (time.monotonic(), allowed)
        self._accept(digest, caller)
        return allowed

    async def close(self) -> None:
        """Close every client."""
        for kept in (self._callers, self._pending):
            while kept:
                _, caller = kept.popitem()
                await caller.client.close()

    def _caller(self, digest: str, token: str) -> _Caller:
        refused_at = self._rejected.get(digest)
        if refused_at is not None:
            if time.monotonic() - refused_at < REJECTED_SECONDS:
                raise NotAuthenticated("the bearer token was not accepted")
            del self._rejected[digest]
        caller = self._callers.get(digest)
        if caller is not None:
            self._callers.move_to_end(digest)
            return caller
        caller = self._pending.get(digest)
        if caller is None:
            config = KubeConfig(
                clusters={"cluster": self._own.cluster},
                contexts={"caller": Context(cluster="cluster", user="caller")},
                users={"caller": User(token=token)}, current_context="caller",
                fname=self._own.fname,
            )
            caller = _Caller(AsyncClient(config=config, field_manager="cerise-apiserver"))
            self._pending[digest] = caller
            _bound(self._pending, MAX_PENDING)
        return caller

    def _accept(self, digest: str, caller: _Caller) -> None:
        """Keep the caller of a token the API server accepted among the callers."""
        if self._pending.pop(digest, None) is None:
            return
        self._callers[digest] = caller
        _bound(self._callers, MAX_CALLERS)

    def _reject(self, digest: str) -> None:
        self._pending.pop(digest, None)  # collected, not closed: see `_bound`
        self._callers.pop(digest, None)
        self._rejected[digest] = time.monotonic()
        _bound(self._rejected, MAX_REJECTED)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bound(kept: OrderedDict[str, _T], limit: int) -> None:
    """Drop the oldest entries over `limit`. A dropped client may still serve a request in
    flight: it is left to be collected rather than closed under that request."""
    while len(kept) > limit:
        kept.popitem(last=False)
