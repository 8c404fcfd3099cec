"""Delete a Cerise release's job objects while its operator still runs (helm pre-delete hook).

`helm uninstall` deletes a release's objects all at once: the operator's Deployment goes
with them, and the WorkflowJobs (and the ComputeResources, whose worker daemons kopf guards
with the same finalizer) would stay behind for ever, each holding a finalizer
(`cerise.dev/cleanup`) that only the operator removes. So before anything is deleted, this
script deletes, in order, every WorkflowJob of the namespace (the operator cancels the
remote job, removes its remote and published files and releases the finalizer), then the
release's Specialisation and ComputeResources, and waits until they are gone.

If that takes longer than --timeout seconds it fails (helm then stops the uninstall and
leaves the release as it is, operator included), or with --force removes Cerise's finalizer
from what is left, saying which remote files may stay behind.

Runs in the Cerise image (lightkube is a dependency of the package) with the hook's
ServiceAccount, or anywhere with a kubeconfig (KUBECONFIG).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from typing import Any

from lightkube import ApiError, Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

FINALIZER = "cerise.dev/cleanup"
POLL_SECONDS = 0.5

KINDS = {
    plural: create_namespaced_resource("cerise.dev", "v1alpha1", kind, plural)
    for kind, plural in (("WorkflowJob", "workflowjobs"), ("Specialisation", "specialisations"),
                         ("ComputeResource", "computeresources"))
}


def say(message: str) -> None:
    """One line of the hook's log (`kubectl logs job/<release>-cerise-cleanup`)."""
    print(f"cerise cleanup: {message}", flush=True)


def present(client: Client, plural: str, namespace: str, names: set[str] | None) -> list[Any]:
    """The objects of the kind that exist: all of the namespace's, or those named."""
    found: list[Any] = list(client.list(KINDS[plural], namespace=namespace))
    return [obj for obj in found if names is None or obj.metadata.name in names]


def delete(client: Client, plural: str, namespace: str, objects: Iterable[Any]) -> None:
    """Ask for the deletion of each object not already being deleted."""
    for obj in objects:
        if obj.metadata.deletionTimestamp is None:
            try:
                client.delete(KINDS[plural], obj.metadata.name, namespace=namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise


def release_finalizer(client: Client, plural: str, namespace: str, obj: Any) -> bool:
    """Remove Cerise's finalizer from `obj` (compare-and-swap on its resourceVersion)."""
    for _ in range(10):
        finalizers = list(obj.metadata.finalizers or [])
        if FINALIZER not in finalizers:
            return False
        patch = {"metadata": {"resourceVersion": obj.metadata.resourceVersion,
                              "finalizers": [f for f in finalizers if f != FINALIZER]}}
        try:
            client.patch(KINDS[plural], obj.metadata.name, patch, namespace=namespace,
                         patch_type=PatchType.MERGE)
            return True
        except ApiError as error:
            if error.status.code == 404:
                return False
            if error.status.code != 409:
                raise
        try:
            obj = client.get(KINDS[plural], obj.metadata.name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:  # the operator released it meanwhile
                return False
            raise
    raise RuntimeError(f"{plural}/{obj.metadata.name} kept changing; finalizer not removed")


def describe(objects: Iterable[Any]) -> str:
    """Names and the finalizers still held, for messages."""
    return ", ".join(
        f"{obj.metadata.name} (finalizers: {', '.join(obj.metadata.finalizers or [])})"
        for obj in objects)


def clean(client: Client, namespace: str, plural: str, names: set[str] | None,
          deadline: float, force: bool) -> bool:
    """Delete the objects and wait until they are gone; False if some remain at the deadline.

    For WorkflowJobs (`names` None) jobs that appear meanwhile are deleted too. Deletion is
    asked for at least once, even when an earlier stage used up the time.
    """
    what = (f"{plural} of namespace {namespace}" if names is None
            else f"{plural} {', '.join(sorted(names))}")
    remaining = present(client, plural, namespace, names)
    if remaining:
        say(f"deleting {len(remaining)} {what}")
    while remaining:
        delete(client, plural, namespace, remaining)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
        remaining = present(client, plural, namespace, names)
    if not remaining:
        return True
    if not force:
        say(f"gave up waiting for the operator to release {what}: {describe(remaining)}")
        return False
    released = [obj for obj in remaining if release_finalizer(client, plural, namespace, obj)]
    if released:
        say(f"removed {FINALIZER} from {len(released)} {plural} the operator did not release "
            f"in time: {', '.join(obj.metadata.name for obj in released)} (their remote files, "
            f"and remote jobs still running, may be left on the compute resources)")
    return True


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and clean up; exit status 0 when nothing is left."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True, help="the release's namespace")
    parser.add_argument("--specialisation", action="append", default=[],
                        help="a Specialisation of the release (repeatable)")
    parser.add_argument("--compute-resource", action="append", default=[],
                        help="a ComputeResource of the release (repeatable)")
    parser.add_argument("--timeout", type=float, default=240,
                        help="seconds to wait for the operator, for all objects together")
    parser.add_argument("--force", action="store_true",
                        help="after the timeout, remove Cerise's finalizer instead of failing")
    args = parser.parse_args(argv)
    client = Client(config=KubeConfig.from_env(), field_manager="cerise-uninstall")
    deadline = time.monotonic() + args.timeout
    stages: list[tuple[str, set[str] | None]] = [
        ("workflowjobs", None),
        ("specialisations", set(args.specialisation)),
        ("computeresources", set(args.compute_resource)),
    ]
    for plural, names in stages:
        if names is not None and not names:
            continue
        if not clean(client, args.namespace, plural, names, deadline, args.force):
            say("the release is left as it is; see the operator's log, then run helm "
                "uninstall again (or with --no-hooks to leave these objects behind)")
            return 1
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
