"""The embedded control plane itself: pinned versions, helm, controller-manager behaviour."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.process import wait_until

pytestmark = pytest.mark.integration

K8S_VERSION = "v1.35.4"


def test_kubectl_and_server_are_the_pinned_release(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["minor"] == "35"


def test_helm_matches_the_server_minor_and_reaches_it(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig),
           "HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "cfg"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    helm = str(control_plane.bindir / "helm")
    version = subprocess.run([helm, "version", "--short"], env=env, capture_output=True,
                             text=True, check=True).stdout
    assert version.startswith("v3.")
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.35.0-0 <1.36.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {minor: {{ .Capabilities.KubeVersion.Minor | quote }}}\n")
    subprocess.run([helm, "install", "probe", str(chart), "-n", "default"], env=env,
                   capture_output=True, text=True, check=True)
    try:
        data = json.loads(control_plane.kubectl(
            "get", "configmap", "probe", "-n", "default", "-o", "json").stdout)["data"]
        assert data == {"minor": "35"}
    finally:
        subprocess.run([helm, "uninstall", "probe", "-n", "default"], env=env,
                       capture_output=True, check=True)


def test_namespace_deletion_completes(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "doomed")
    control_plane.kubectl("create", "configmap", "x", "-n", "doomed")
    control_plane.kubectl("delete", "namespace", "doomed", "--wait=false")
    wait_until(
        lambda: control_plane.kubectl("get", "namespace", "doomed", check=False).returncode != 0,
        timeout=60, what="namespace deletion by kube-controller-manager",
        log=control_plane.daemon("kube-controller-manager").log,
    )


def test_garbage_collector_deletes_owned_objects(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = control_plane.kubectl("get", "configmap", "owner", "-n", namespace,
                                "-o", "jsonpath={.metadata.uid}").stdout
    owned = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "owned", "namespace": namespace, "ownerReferences": [
                 {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}
    control_plane.kubectl("create", "-f", "-", stdin=json.dumps(owned))
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_until(
        lambda: control_plane.kubectl(
            "get", "configmap", "owned", "-n", namespace, check=False).returncode != 0,
        timeout=60, what="garbage collection",
    )


def test_aggregated_roles_have_rules(control_plane: ControlPlane) -> None:
    def aggregated() -> bool:
        role = json.loads(control_plane.kubectl("get", "clusterrole", "view", "-o", "json").stdout)
        return bool(role.get("rules"))

    wait_until(aggregated, timeout=60, what="clusterrole aggregation")
