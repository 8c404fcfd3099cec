"""The Helm chart's pods really running, on a real node (cerise/devenv/node.py).

The image is the repository's Dockerfile built here (tools/build-image.sh) and loaded into
the node's containerd. The published cerise-client and wes-client reach the apiserver the
way the chart's notes tell a user to, through `kubectl port-forward` of its Service; the
dashboard is fetched through the Service's cluster address (kube-proxy). Compute resources
are the local one of the default values (jobs inside the operator's pod) and the test sshd,
which pods reach at the node's address.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cerise_client
import httpx
import pytest
import yaml

from cerise.devenv import node as devenv_node
from cerise.devenv.controlplane import REPO, ControlPlane
from cerise.devenv.process import free_port
from cerise.devenv.sshd import SshEndpoint
from tests.integration import http_calls
from tests.integration.api_fixtures import poll_until
from tests.integration.node_fixtures import Images, kubelet_log
from tests.integration.test_helm import CHART, helm, helm_env, values_file
from tests.integration.test_rest_cerise_client import SLEEP, WC
from tests.integration.test_rest_wes import WC as WES_WC

pytestmark = pytest.mark.integration
__all__ = ["helm_env"]  # the fixture, shared with the chart's other tests

CHART_IMAGE = "docker.io/library/cerise-k8s:{}".format(
    yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
"""What the default values' image (`cerise-k8s`, tag appVersion) means to containerd."""
HOME = Path("/home")
UPGRADE_JOBS = 50
"""Jobs running while `helm upgrade` replaces the operator's pod."""
DELAY = 97
"""How long each of them sleeps (an unusual number, to count their processes by)."""


def sleeping() -> int:
    """How many of the jobs' `sleep` processes run on the test host."""
    found = subprocess.run(["pgrep", "-f", f"^sleep {DELAY}$"], capture_output=True, text=True)
    return len(found.stdout.split())


def image_name(images: Images) -> str:
    """The name the Cerise image was built under (localhost/cerise-k8s:<content hash>)."""
    return devenv_node.archive_names(images.cerise)[0]


def install(plane: ControlPlane, env: dict[str, str], node: devenv_node.Node, namespace: str,
            *args: str, command: str = "install") -> None:
    """helm install (or upgrade) --wait: the Deployments' pods Ready, or say why not."""
    result = helm(env, command, "rel", str(CHART), "-n", namespace, "--wait",
                  "--timeout", "5m", *args, plane=plane, check=False)
    if result.returncode != 0:
        pods = plane.kubectl("describe", "pods", "-n", namespace, check=False).stdout
        raise AssertionError(f"helm {command} failed:\n{result.stdout}{result.stderr}\n"
                             f"{pods[-6000:]}\nkubelet:\n{kubelet_log(node)}")


def pods(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(plane.kubectl(
        "get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return found


def ready_pods(plane: ControlPlane, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """The Ready pods of the namespace (not being deleted), by component."""
    found: dict[str, list[dict[str, Any]]] = {}
    for pod in pods(plane, namespace):
        if not pod["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions", [])):
            component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "")
            found.setdefault(component, []).append(pod)
    return found


def wait_specialisation(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """The Specialisation's status once Ready (its projects installed everywhere)."""
    found: dict[str, Any] = {}

    def ready() -> bool:
        result = plane.kubectl("get", "specialisation", name, "-n", namespace, "-o", "json",
                               check=False)
        if result.returncode:
            return False
        found.update(json.loads(result.stdout).get("status") or {})
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in found.get("conditions", []))

    poll_until(ready, 180, f"Specialisation {name} Ready")
    return found


def answers(url: str) -> bool:
    """Whether `url` answers 200 (False while nothing listens yet)."""
    try:
        return http_calls.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def port_forward(plane: ControlPlane, namespace: str, port: int) -> Iterator[int]:
    """`kubectl port-forward service/rel-cerise <port>:29593`, as the chart's notes say."""
    process = subprocess.Popen(
        [str(plane.bindir / "kubectl"), "--kubeconfig", str(plane.kubeconfig), "--context",
         "admin", "-n", namespace, "port-forward", "service/rel-cerise", f"{port}:29593"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll_until(lambda: answers(f"http://localhost:{port}/healthz"), 60, "the port-forward")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def service_url(plane: ControlPlane, namespace: str) -> str:
    """The apiserver's Service at its cluster address (reached through kube-proxy)."""
    ip = plane.kubectl("get", "service", "rel-cerise", "-n", namespace, "-o",
                       "jsonpath={.spec.clusterIP}").stdout
    return f"http://{ip}:29593"


def uninstall_leaves_nothing(plane: ControlPlane, env: dict[str, str], namespace: str) -> None:
    """helm uninstall (its cleanup hook runs as a pod), then nothing of the release is left."""
    helm(env, "uninstall", "rel", "-n", namespace, "--wait", "--timeout", "5m", plane=plane)
    def left() -> list[str]:
        names = plane.kubectl(
            "get", "workflowjobs,computeresources,specialisations,deployments,jobs,pods,"
            "persistentvolumeclaims,secrets,configmaps,services,networkpolicies",
            "-n", namespace, "-o", "name").stdout.split()
        return [name for name in names if not name.endswith("/kube-root-ca.crt")]

    poll_until(lambda: not left(), 120, "nothing of the release left")
    cluster_wide = plane.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name").stdout
    assert f"{namespace}-rel-cerise" not in cluster_wide


def run_wc(port: int, tmp_path: Path) -> str:
    """The published cerise-client runs the word count to Success and downloads its output;
    the job's log."""
    service = cerise_client.Service("http://localhost", port)
    source = tmp_path / "words.txt"
    source.write_text("one two three\nfour five\n")
    job = service.create_job(f"wc-{uuid.uuid4().hex[:6]}")
    job.set_workflow(WC)
    job.add_input_file("file", str(source))
    job.run()
    poll_until(lambda: not job.is_running(), 180, f"job {job.id} ending")
    assert job.state == "Success", job.log
    saved = tmp_path / "saved.txt"
    job.outputs["output"].save_as(str(saved))
    assert saved.read_text().split()[:3] == ["2", "5", "24"]
    return str(job.log)


def test_default_values_run_jobs_and_uninstall_cleanly(
    node: devenv_node.Node, images: Images, control_plane: ControlPlane, namespace: str,
    helm_env: dict[str, str], tmp_path: Path,
) -> None:
    """`helm install` with nothing but the defaults: the pods get Ready, the operator
    installs the example project on the local resource in its pod, a job runs through the
    published client, the dashboard answers through the Service, and uninstall cleans up."""
    node.tag(image_name(images), CHART_IMAGE)
    began = time.monotonic()
    install(control_plane, helm_env, node, namespace)
    ready = ready_pods(control_plane, namespace)
    assert {"operator", "apiserver"} <= set(ready), list(ready)
    assert len(ready["operator"]) == 2  # the replicas, sharing the one resource's work
    wait_specialisation(control_plane, namespace, "rel")
    # The default exchange URL is http://localhost:29593/files: port-forward to that port.
    with port_forward(control_plane, namespace, 29593) as port:
        log = run_wc(port, tmp_path)
    print(f"\nhelm install to a first job's Success in {time.monotonic() - began:.1f} s")
    # the runner in the pod: the image's one cwltool, at the version the Dockerfile pins
    [pinned] = re.findall(r"CWLTOOL_VERSION=(\S+)", (REPO / "Dockerfile").read_text())
    assert f"/opt/cerise/venv/bin/cwltool {pinned}" in log, log[:500]
    url = service_url(control_plane, namespace)
    # A client in the cluster names the Service; its cluster address alone is not a name of
    # the service's own, and DNS-rebinding-safe Host checking refuses it.
    assert http_calls.get(f"{url}/", timeout=10).status_code == 400
    named = {"Host": f"rel-cerise.{namespace}.svc:29593"}
    page = http_calls.get(f"{url}/", headers=named, timeout=10)
    assert page.status_code == 200 and "<title>" in page.text
    listed = http_calls.get(f"{url}/ui/fragments/jobs", headers=named, timeout=10)
    assert listed.status_code == 200 and "wc-" in listed.text
    uninstall_leaves_nothing(control_plane, helm_env, namespace)


def ssh_values(sshd: SshEndpoint, images: Images, base: str, port: int,
               tag: str | None = None, names: tuple[str, ...] = ("alpha", "beta"),
               ) -> dict[str, Any]:
    """ComputeResources (two by default) on the test sshd, reached from the pod network."""
    repository, _, built_tag = image_name(images).rpartition(":")

    def resource(name: str) -> dict[str, Any]:
        return {"name": name, "credentials": {
            "username": sshd.username, "privateKey": sshd.client_key.read_text()},
            "spec": {"hostKeys": [sshd.host_key], "refreshSeconds": 1,
                     "files": {"protocol": "sftp", "host": sshd.host, "port": sshd.port,
                               "path": f"/home/$CERISE_USERNAME/{base}-{name}"},
                     "jobs": {"protocol": "ssh", "host": sshd.host, "port": sshd.port,
                              "scheduler": "none"}}}

    return {"computeResources": [resource(name) for name in names],
            "defaultComputeResource": names[0],
            "image": {"repository": repository, "tag": tag or built_tag},
            "exchange": {"url": f"http://localhost:{port}/files"}}


def wes_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The published wes-client as a user runs it."""
    command = shutil.which("wes-client") or str(Path(sys.executable).parent / "wes-client")
    return subprocess.run([command, "--proto=http", f"--host=localhost:{port}", *args],
                          capture_output=True, text=True, timeout=300)


def free_local_port() -> int:
    """A port free on localhost for both address families kubectl port-forward binds."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET6) as probe, contextlib.suppress(OSError):
            probe.bind(("::1", port))
            return port


def test_two_ssh_resources_survive_an_upgrade_and_uninstall(
    node: devenv_node.Node, node_sshd: SshEndpoint, images: Images,
    control_plane: ControlPlane, namespace: str, helm_env: dict[str, str], tmp_path: Path,
) -> None:
    """A values file of two ComputeResources on the test sshd: the operator in its pod
    installs the project on both over SSH; cerise-client and wes-client run jobs there; a
    `helm upgrade` to a new image while 50 jobs run loses none (and runs none twice: each
    ends once, in Success); uninstall leaves nothing."""
    base = f".cerise-{uuid.uuid4().hex[:6]}"
    port = free_local_port()
    values = values_file(tmp_path, ssh_values(node_sshd, images, base, port))
    install(control_plane, helm_env, node, namespace, "-f", str(values))
    status = wait_specialisation(control_plane, namespace, "rel")
    home = HOME / node_sshd.username
    for resource in ("alpha", "beta"):
        installed = home / f"{base}-{resource}"
        assert installed.is_dir() and any(installed.rglob("*.cwl")), (resource, status)

    with port_forward(control_plane, namespace, port):
        run_wc(port, tmp_path)
        (tmp_path / "wc.cwl").write_text(json.dumps(WES_WC))
        (tmp_path / "words.txt").write_text("one two\nthree\n")
        (tmp_path / "job.json").write_text(json.dumps(
            {"file": {"class": "File", "path": "words.txt"}}))
        done = wes_client(port, f"--attachments=file://{tmp_path / 'words.txt'}",
                          str(tmp_path / "wc.cwl"), str(tmp_path / "job.json"))
        assert done.returncode == 0, done.stderr
        counts = http_calls.get(json.loads(done.stdout)["counts"]["location"]).text.split()
        assert counts[:3] == ["2", "3", "14"]

        service = cerise_client.Service("http://localhost", port)
        sleepers = []
        for _ in range(UPGRADE_JOBS):
            job = service.create_job(f"sleep-{uuid.uuid4().hex[:6]}")
            job.set_workflow(SLEEP)
            job.set_input("delay", DELAY)
            job.run()
            sleepers.append(job.id)
        poll_until(lambda: all(service.get_job_by_id(i).state == "Running" for i in sleepers),
                   240, "the jobs running")

    before = {p["metadata"]["uid"] for p in ready_pods(control_plane, namespace)["operator"]}
    new_image = f"{image_name(images)}-next"
    node.tag(image_name(images), new_image)
    upgraded = ssh_values(node_sshd, images, base, port, tag=new_image.rpartition(":")[2])
    install(control_plane, helm_env, node, namespace, "-f",
            str(values_file(tmp_path, upgraded, "upgraded.yaml")), command="upgrade")
    poll_until(lambda: not before & {p["metadata"]["uid"] for p in pods(control_plane, namespace)},
               120, "the former operator pods gone")
    after = ready_pods(control_plane, namespace)["operator"]
    assert len(after) == 2
    assert {p["spec"]["containers"][0]["image"] for p in after} == {new_image}

    with port_forward(control_plane, namespace, port):
        service = cerise_client.Service("http://localhost", port)
        most = 0

        def ended() -> bool:
            nonlocal most
            most = max(most, sleeping())
            return all(not service.get_job_by_id(i).is_running() for i in sleepers)

        poll_until(ended, 300, "the jobs ending")
        assert most <= UPGRADE_JOBS  # the new operator started none of them again
        assert [service.get_job_by_id(i).state for i in sleepers] == ["Success"] * UPGRADE_JOBS
    jobs = json.loads(control_plane.kubectl(
        "get", "workflowjobs", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(jobs) == UPGRADE_JOBS + 2, [j["metadata"]["name"] for j in jobs]
    uninstall_leaves_nothing(control_plane, helm_env, namespace)
