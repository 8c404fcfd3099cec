"""Cerise's custom resources on the Kubernetes API, and atomic job phase transitions.

A transition is one JSON Patch on the status subresource whose first operation is a
`test` of the current phase: the API server applies the whole patch or none of it, so
of several writers that start from the same phase exactly one wins. The losers get
`TransitionConflict` and must re-read the job and decide again.

A job without a status yet (just created) has no phase to test; its first transition
is guarded by `metadata.resourceVersion` instead. A write made for a compute resource by
the operator replica holding its Lease also tests the job's `status.fence`
(`cerise.kube.leases`), so that a former holder's writes cannot land.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.types import PatchType

from cerise.model import states
from cerise.model.leases import FencingToken, fence_test
from cerise.model.states import Phase

GROUP = "cerise.dev"
VERSION = "v1alpha1"

WorkflowJob = create_namespaced_resource(GROUP, VERSION, "WorkflowJob", "workflowjobs")
ComputeResource = create_namespaced_resource(GROUP, VERSION, "ComputeResource", "computeresources")
Specialisation = create_namespaced_resource(GROUP, VERSION, "Specialisation", "specialisations")

INITIAL = Phase.SUBMITTED
"""The phase a new job is given by its first transition."""

# 422: a JSON Patch `test` failed; 409: the resourceVersion precondition failed.
_CONFLICT_CODES = frozenset({409, 422})


class TransitionConflict(Exception):
    """The job was not in the expected phase: another writer moved it first."""


def now() -> str:
    """The current time as a Kubernetes timestamp."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def transition_patch(
    source: Phase | None,
    target: Phase,
    *,
    resource_version: str | None = None,
    message: str | None = None,
    fields: Mapping[str, Any] | None = None,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """The JSON Patch that moves a job from `source` to `target`, or raises IllegalTransition.

    `fields` are further status fields (e.g. remoteJobId, output) set in the same write;
    `generation` is the spec generation the decision was made from (observedGeneration).
    The `Succeeded` condition is written when it flips: Unknown at the first transition,
    True or False at the final one.
    """
    if source is None:
        if target is not INITIAL:
            raise states.IllegalTransition(Phase.SUBMITTED, target)
        if resource_version is None:
            raise ValueError("the first transition needs the job's resourceVersion")
    else:
        states.check_transition(source, target)
    status: dict[str, Any] = dict(fields or {})
    status["phase"] = target.value
    status["state"] = states.rest_state(target).value
    if message is not None:
        status["message"] = message
    if generation is not None:
        status["observedGeneration"] = generation
    if target in states.FINAL:
        status["finishedAt"] = now()
    if source is None or target in states.FINAL:
        status["conditions"] = [succeeded_condition(target, message)]
    if source is None:
        return [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]
    return [
        {"op": "test", "path": "/status/phase", "value": source.value},
        *({"op": "add", "path": f"/status/{_escape(key)}", "value": value}
          for key, value in status.items()),
    ]


def succeeded_condition(phase: Phase, message: str | None) -> dict[str, str]:
    """The job's `Succeeded` condition in `phase`: Unknown until it ends, then True or False."""
    if phase not in states.FINAL:
        status, reason, text = "Unknown", "InProgress", "the job has not ended yet"
    else:
        status = "True" if phase is Phase.SUCCESS else "False"
        reason, text = phase.value, message or phase.value
    return {"type": "Succeeded", "status": status, "reason": reason,
            "message": text[:4096], "lastTransitionTime": now()}


def _escape(key: str) -> str:
    """A status key as a JSON Pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


async def transition(
    client: AsyncClient,
    *,
    namespace: str,
    name: str,
    source: Phase | None,
    target: Phase,
    resource_version: str | None = None,
    message: str | None = None,
    fields: Mapping[str, Any] | None = None,
    generation: int | None = None,
    fence: FencingToken | None = None,
) -> GenericNamespacedResource:
    """Atomically move job `namespace/name` from `source` to `target`; return the new object.

    Raises TransitionConflict if the job is no longer in `source` (or, for the first
    transition, was changed since `resource_version`; or its `status.fence` is not
    `fence`, when one is given: another replica has taken its resource over), and
    IllegalTransition if the state machine forbids the move.
    """
    patch = transition_patch(
        source, target, resource_version=resource_version, message=message, fields=fields,
        generation=generation,
    )
    if fence is not None:
        patch.insert(0, fence_test(fence))
    try:
        # lightkube's type overloads omit subresources; the call itself supports them.
        job: GenericNamespacedResource = await client.patch(
            WorkflowJob.Status,  # type: ignore[arg-type]
            name, patch, namespace=namespace, patch_type=PatchType.JSON,
        )
    except ApiError as error:
        if error.status.code in _CONFLICT_CODES:
            raise TransitionConflict(
                f"{namespace}/{name} is no longer in {source or 'its initial state'}"
            ) from error
        raise
    return job


async def patch_status(
    client: AsyncClient, *, namespace: str, name: str, status: Mapping[str, Any],
    fence: FencingToken | None = None, current: Mapping[str, Any] | None = None,
) -> GenericNamespacedResource:
    """Merge `status` into job `namespace/name`'s status: observed facts that are no phase
    change (e.g. its steps), so no compare-and-swap. Returns the new object.

    With `fence`, the write lands only while the job's `status.fence` is `fence` (else
    TransitionConflict); `status` is then merged into `current`, the job's status as the
    writer last saw it (a JSON Patch, which a fence needs, cannot merge).
    """
    if fence is None:
        job: GenericNamespacedResource = await client.patch(
            WorkflowJob.Status,  # type: ignore[arg-type]
            name, {"status": dict(status)}, namespace=namespace, patch_type=PatchType.MERGE,
        )
        return job
    seen = current or {}
    patch = [fence_test(fence)]
    for key, value in status.items():
        path = f"/status/{_escape(key)}"
        if value is not None:
            patch.append({"op": "add", "path": path, "value": merged(seen.get(key), value)})
        elif key in seen:
            patch.append({"op": "remove", "path": path})
    try:
        job = await client.patch(
            WorkflowJob.Status,  # type: ignore[arg-type]
            name, patch, namespace=namespace, patch_type=PatchType.JSON,
        )
    except ApiError as error:
        if error.status.code in _CONFLICT_CODES:
            raise TransitionConflict(f"{namespace}/{name} was taken over") from error
        raise
    return job


def merged(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as a JSON Merge Patch (RFC 7386): maps are merged, a
    None removes its key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


def phase_of(job: Mapping[str, Any] | GenericNamespacedResource) -> Phase | None:
    """The job's current phase, or None before its first transition."""
    status = job.get("status") or {}
    phase = status.get("phase")
    return Phase(phase) if phase else None
