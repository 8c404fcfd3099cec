"""What the archive keeps of a finished job, and the job as the doors show it again.

Pure: an archived job is its WorkflowJob as it was (metadata without managedFields or
kopf's bookkeeping, the spec, the final status: outputs, steps, conditions, message,
timestamps) plus where its log is. Shown again, it is that same body, so the routers
present archived and live jobs alike, with the same id (the object name) and state.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cerise.kube.jobs import GROUP
from cerise.model import retention

Body = Mapping[str, Any]

ARCHIVED = f"{GROUP}/archived"
"""Annotation on a WorkflowJob whose deletion is an archive prune: the job is in the
archive, so its published outputs and log stay in the exchange."""
_KOPF_KEEPING = (f"{GROUP}/last-handled-configuration", f"{GROUP}/archived")
"""Annotations that are bookkeeping of the live object, not part of the job."""


@dataclass(frozen=True)
class Record:
    """One archived job: the searched columns and the body."""

    uid: str
    namespace: str
    name: str
    resource: str
    phase: str
    created: str
    finished_at: datetime.datetime | None
    log_url: str
    body: dict[str, Any]


def record(job: Body, log_url: str) -> Record:
    """The archive's record of a finished job; ValueError if it has not finished."""
    ended = retention.finished_at(job)
    if ended is None:
        raise ValueError(f"job {job['metadata'].get('name')!r} has not finished")
    meta = job["metadata"]
    annotations = {key: value for key, value in (meta.get("annotations") or {}).items()
                   if key not in _KOPF_KEEPING and not _kopf_progress(key)}
    kept_meta = {key: meta[key] for key in ("name", "namespace", "uid", "creationTimestamp",
                                             "resourceVersion", "labels", "generation")
                 if key in meta}
    kept_meta["annotations"] = annotations
    body = {"apiVersion": job.get("apiVersion"), "kind": job.get("kind"),
            "metadata": kept_meta, "spec": dict(job["spec"]),
            "status": {**job["status"], "logUrl": log_url}}
    return Record(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
                  resource=job["spec"]["computeResource"], phase=job["status"]["phase"],
                  created=meta.get("creationTimestamp") or "", finished_at=ended,
                  log_url=log_url, body=body)


def _kopf_progress(key: str) -> bool:
    """kopf's per-handler progress annotations (`cerise.dev/<handler id>`)."""
    prefix, _, rest = key.partition("/")
    return prefix == GROUP and rest.startswith("cerise.operator.")


def is_archive_prune(job: Body) -> bool:
    """Whether the job's deletion is its archive prune (its files are to stay)."""
    return (job["metadata"].get("annotations") or {}).get(ARCHIVED) == "true"


def order(job: Body) -> tuple[str, str]:
    """The order every door lists jobs in: creation time, then name."""
    return job["metadata"].get("creationTimestamp") or "", job["metadata"]["name"]
