"""Acting as the caller: API clients that carry a caller's bearer token, and access checks.

In cluster mode the apiserver writes with the caller's own token, so Kubernetes RBAC
decides what each caller may do; reads come from a shared cache, and `Callers.allowed`
asks the API server (a SelfSubjectAccessReview made with the caller's token) whether
the caller may read what the cache holds. Answers and clients are kept for a short
while, keyed by a hash of the token (the token itself is never logged or kept as a key).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Context, User
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview

from cerise.kube.jobs import GROUP

ANSWER_SECONDS = 30.0
"""How long an access check's answer is reused."""
MAX_CALLERS = 256
"""Callers whose clients are kept open at once."""


class NotAuthenticated(Exception):
    """The API server did not accept the caller's token."""


@dataclass
class _Caller:
    client: AsyncClient
    answers: dict[tuple[str, str, str], tuple[float, bool]] = field(default_factory=dict)


class Callers:
    """API clients acting as callers, made from the apiserver's own cluster configuration."""

    def __init__(self, own: SingleConfig) -> None:
        self._own = own
        self._callers: OrderedDict[str, _Caller] = OrderedDict()

    def client(self, token: str) -> AsyncClient:
        """An API client that acts as the holder of `token`."""
        return self._caller(token).client

    async def allowed(self, token: str, namespace: str, verb: str,
                      resource: str = "workflowjobs") -> bool:
        """Whether the holder of `token` may `verb` Cerise `resource`s in `namespace`."""
        caller = self._caller(token)
        key = (namespace, verb, resource)
        cached = caller.answers.get(key)
        if cached is not None and time.monotonic() - cached[0] < ANSWER_SECONDS:
            return cached[1]
        review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
            resourceAttributes=ResourceAttributes(
                group=GROUP, resource=resource, verb=verb, namespace=namespace)))
        try:
            answer = await caller.client.create(review)
        except ApiError as error:
            if error.status.code == 401:
                raise NotAuthenticated("the bearer token was not accepted") from None
            raise
        allowed = bool(answer.status and answer.status.allowed)
        caller.answers[key] = (time.monotonic(), allowed)
        return allowed

    async def close(self) -> None:
        """Close every client."""
        while self._callers:
            _, caller = self._callers.popitem()
            await caller.client.close()

    def _caller(self, token: str) -> _Caller:
        digest = hashlib.sha256(token.encode()).hexdigest()
        caller = self._callers.get(digest)
        if caller is None:
            config = KubeConfig(
                clusters={"cluster": self._own.cluster},
                contexts={"caller": Context(cluster="cluster", user="caller")},
                users={"caller": User(token=token)}, current_context="caller",
                fname=self._own.fname,
            )
            caller = _Caller(AsyncClient(config=config, field_manager="cerise-apiserver"))
            self._callers[digest] = caller
            if len(self._callers) > MAX_CALLERS:
                _, oldest = self._callers.popitem(last=False)
                # An evicted client may still serve a request in flight: let it be
                # collected rather than closed under that request.
                del oldest
        self._callers.move_to_end(digest)
        return caller
