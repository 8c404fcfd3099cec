"""Session fixtures for the real Kubernetes control plane, a namespace per test, and waiting
for an object by watching it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient, Client
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Pod
from prometheus_client.parser import text_string_to_metric_families

from cerise.devenv import apiserver as apiserver_process
from cerise.devenv import controlplane
from cerise.devenv import operator as operator_process
from cerise.devenv.controlplane import ControlPlane
from cerise.kube.jobs import ComputeResource, Specialisation, WorkflowJob

TENANTS = {"alice": ("team-a", "cerise:team-a"), "bob": ("team-b", "cerise:team-b")}


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager with the CRDs and two tenants."""
    plane = controlplane.start(
        tmp_path_factory.mktemp("control-plane"),
        identities=[(user, (group,)) for user, (_, group) in TENANTS.items()]
        + [operator_process.IDENTITY, apiserver_process.IDENTITY],
        namespaces={user: namespace for user, (namespace, _) in TENANTS.items()},
        # the test node's pods reach it at the node's address
        bind_address="0.0.0.0",  # noqa: S104
    )
    try:
        for namespace, group in TENANTS.values():
            controlplane.create_tenant(plane, namespace, group)
        controlplane.bind_cluster_role(plane, "cerise-operator", operator_process.IDENTITY[1][0])
        controlplane.bind_cluster_role(plane, "cerise-apiserver",
                                       apiserver_process.IDENTITY[1][0])
        previous = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        yield plane
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        plane.stop()


def kube_config(plane: ControlPlane, user: str = "admin") -> SingleConfig:
    """The lightkube configuration of one kubeconfig context (read once: every watch makes
    a client from it)."""
    config = _CONFIGS.get((plane.kubeconfig, user))
    if config is None:
        config = KubeConfig.from_file(str(plane.kubeconfig)).get(context_name=user)
        assert config is not None, f"no context {user} in {plane.kubeconfig}"
        _CONFIGS[(plane.kubeconfig, user)] = config
    return config


_CONFIGS: dict[tuple[Path, str], SingleConfig] = {}


def admin_client(plane: ControlPlane) -> Client:
    """A synchronous admin client of `plane`, one per plane for the session (a `kubectl` run
    costs about 90 ms of CPU, and the API server a TLS handshake and discovery)."""
    client = _ADMINS.get(plane.kubeconfig)
    if client is None:
        client = _ADMINS[plane.kubeconfig] = Client(config=kube_config(plane))
    return client


_ADMINS: dict[Path, Client] = {}


def as_dict(obj: Any) -> dict[str, Any]:
    """A lightkube object as the JSON `kubectl get -o json` prints."""
    return cast(dict[str, Any], obj.to_dict())


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    """An admin API client."""
    client = AsyncClient(config=kube_config(control_plane))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def session_kube(control_plane: ControlPlane) -> Iterator[Client]:
    """The session plane's admin API client (`admin_client`), for the session's fixtures."""
    client = admin_client(control_plane)
    try:
        yield client
    finally:
        _ADMINS.pop(control_plane.kubeconfig, None)
        client.close()


@pytest.fixture
def namespace(session_kube: Client) -> Iterator[str]:
    """A fresh namespace for one test. Afterwards its Cerise objects are deleted (without
    waiting), and the namespace itself only if workloads were made in it (a Helm release):
    a namespace's deletion makes the namespace controller list and delete each of 33 kinds,
    often more than once, which was over half of the suite's API requests. An emptied
    namespace stays until the session's control plane stops."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    session_kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    for kind in (WorkflowJob, ComputeResource, Specialisation):
        session_kube.deletecollection(kind, namespace=name)
    if any(next(iter(session_kube.list(kind, namespace=name, chunk_size=1)), None)
           for kind in (Pod, Deployment, Job)):
        session_kube.delete(Namespace, name)


async def watch_until(
    plane: ControlPlane, kind: type[GenericNamespacedResource], namespace: str, name: str,
    done: Callable[[dict[str, Any]], bool], *, timeout: float, what: str,
) -> dict[str, Any]:
    """Watch one object (absent until it is made) until `done` holds for it; return it.
    AssertionError naming `what`, with the last status seen, if it does not within `timeout` s.
    """
    client = AsyncClient(config=kube_config(plane))
    events = cast(AsyncGenerator[tuple[str, GenericNamespacedResource], None], client.watch(
        kind, namespace=namespace, fields={"metadata.name": name}))
    seen: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            async for _, obj in events:
                seen = obj.to_dict()  # type: ignore[no-untyped-call]  # lightkube's own
                if done(seen):
                    return seen
    except TimeoutError:
        pass
    finally:
        await events.aclose()
        await client.close()
    raise AssertionError(f"{what} not within {timeout:g} s: {seen.get('status')}")


def api_requests(plane: ControlPlane, **labels: str) -> float:
    """How many requests the API server has answered so far with these labels of its
    `apiserver_request_total` (e.g. verb="LIST", resource="leases")."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "apiserver_request_total"
               and all(sample.labels.get(name) == value for name, value in labels.items()))
