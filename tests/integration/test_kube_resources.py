"""The custom resources on a real kube-apiserver: schemas, printer columns, examples."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta

from cerise.devenv.controlplane import REPO, ControlPlane
from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.kube.jobs import WorkflowJob
from tests.integration.api_fixtures import poll_until

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"
CRD_NAMES = ["workflowjobs.cerise.dev", "computeresources.cerise.dev", "specialisations.cerise.dev"]


def apply(plane: ControlPlane, namespace: str, body: dict[str, object]) -> tuple[int, str]:
    """kubectl apply one object; (exit code, stdout + stderr)."""
    result = plane.kubectl("apply", "-n", namespace, "-f", "-",
                           stdin=json.dumps(body), check=False)
    return result.returncode, result.stdout + result.stderr


def job(**spec: object) -> dict[str, object]:
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": "j"}, "spec": spec}


def resource(**spec: object) -> dict[str, object]:
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": "r"}, "spec": spec}


@pytest.mark.parametrize("crd", CRD_NAMES)
def test_crd_is_established(control_plane: ControlPlane, crd: str) -> None:
    out = control_plane.kubectl("get", "crd", crd, "-o", "json").stdout
    conditions = {c["type"]: c["status"] for c in json.loads(out)["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("workflowjob.spec.workflow", "URL of a workflow document"),
        ("workflowjob.status.phase", "Phases ending in CR"),
        ("computeresource.spec.jobs.scheduler", "Slurm, Torque/PBS or (Son of) Grid Engine"),
        ("computeresource.spec.hostKeys", "Connections presenting any other key are refused"),
        ("specialisation.spec.projects.version", "A higher version replaces"),
    ],
)
def test_kubectl_explain_documents_fields(
    control_plane: ControlPlane, field: str, words: str
) -> None:
    # The API server publishes a new CRD's schema a moment after it is established.
    poll_until(lambda: control_plane.kubectl("explain", field, check=False).returncode == 0,
               timeout=30, what=f"kubectl explain {field}")
    out = control_plane.kubectl("explain", field).stdout
    assert words in " ".join(out.split())


def test_every_schema_field_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: dict[str, object], path: str) -> None:
        for name, child in (node.get("properties") or {}).items():  # type: ignore[attr-defined]
            where = f"{path}.{name}"
            if name != "metadata" and "description" not in child:
                missing.append(where)
            walk(child, where)
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, f"{path}[]")

    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            walk(version["schema"]["openAPIV3Schema"], crd["spec"]["names"]["kind"])
    assert missing == []


def test_examples_are_accepted(control_plane: ControlPlane, namespace: str) -> None:
    for example in sorted(EXAMPLES.glob("*.yaml")):
        result = control_plane.kubectl("apply", "-n", namespace, "-f", str(example), check=False)
        assert result.returncode == 0, f"{example.name}: {result.stderr}"
    listed = control_plane.kubectl("get", "cerise", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == [
        "computeresource.cerise.dev/cluster",
        "computeresource.cerise.dev/local",
        "specialisation.cerise.dev/example",
        "workflowjob.cerise.dev/count-words",
    ]


def test_short_names_resolve(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "workflow-job.yaml"))
    for short in ("wfj", "cres", "cspec"):
        assert control_plane.kubectl("get", short, "-n", namespace, check=False).returncode == 0


def test_printer_columns_show_state_phase_and_resource(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "workflow-job.yaml"))
    control_plane.kubectl(
        "patch", "wfj", "count-words", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "StagingIn", "state": "Waiting"}}),
    )
    lines = control_plane.kubectl("get", "wfj", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PHASE", "RESOURCE", "STAGED", "AGE"]
    assert lines[1].split()[:4] == ["count-words", "Waiting", "StagingIn", "local"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (job(computeResource="local"), "spec.workflow: Required value"),
        (job(workflow="", computeResource="local"), "spec.workflow: Invalid value"),
        (job(workflow="x.cwl"), "spec.computeResource: Required value"),
        (job(workflow="x.cwl", computeResource="Not_A_Name"), "spec.computeResource"),
        (job(workflow="x.cwl", computeResource="local", timeLimit=0),
         "should be greater than or equal to 1"),
        (resource(jobs={"protocol": "local", "scheduler": "pbspro"}),
         'spec.jobs.scheduler: Unsupported value: "pbspro"'),
        (resource(jobs={"protocol": "telnet"}), 'spec.jobs.protocol: Unsupported value'),
        (resource(jobs={"protocol": "local", "coresPerNode": 0}),
         "spec.jobs.coresPerNode: Invalid value: 0: spec.jobs.coresPerNode in body should be "
         "greater than or equal to 1"),
        (resource(jobs={"protocol": "ssh", "host": "h"}, hostKeys=["ssh-ed25519 AAAA"]),
         "an ssh compute resource needs credentialsSecret"),
        (resource(jobs={"protocol": "ssh", "host": "h"}, credentialsSecret="s"),
         "an ssh compute resource needs hostKeys"),
        (resource(jobs={"protocol": "ssh"}, credentialsSecret="s", hostKeys=["ssh-rsa AAAA"]),
         "an ssh jobs endpoint needs a host"),
        (resource(jobs={"protocol": "local"}, hostKeys=["not a key; rm -rf /"]),
         "spec.hostKeys[0]"),
        (resource(jobs={"protocol": "local", "environment": [{"name": "A;B", "value": "1"}]}),
         "spec.jobs.environment[0].name"),
        (resource(jobs={"protocol": "local"}, retry={"attempts": 0}), "spec.retry.attempts"),
        (resource(jobs={"protocol": "local"}, retry={"timeFactor": 0.5}),
         "spec.retry.timeFactor"),
        (job(workflow="x.cwl", computeResource="local", retry={"attempts": 11}),
         "spec.retry.attempts"),
        ({"apiVersion": "cerise.dev/v1alpha1", "kind": "Specialisation",
          "metadata": {"name": "s"},
          "spec": {"computeResources": ["local"], "projects": [
              {"name": "p", "version": "1.0", "source": {"path": "/a", "url": "https://x"}}]}},
         "give exactly one of configMap, url or path"),
        ({"apiVersion": "cerise.dev/v1alpha1", "kind": "Specialisation",
          "metadata": {"name": "s"}, "spec": {"computeResources": [], "projects": []}},
         "spec.projects: Invalid value"),
    ],
)
def test_invalid_objects_are_refused_by_the_api_server(
    control_plane: ControlPlane, namespace: str, body: dict[str, object], message: str
) -> None:
    code, output = apply(control_plane, namespace, body)
    assert code != 0
    assert message in output
    assert "is invalid" in output


def test_unknown_fields_are_refused(control_plane: ControlPlane, namespace: str) -> None:
    body = job(workflow="x.cwl", computeResource="local", walltime=10)
    code, output = apply(control_plane, namespace, body)
    assert code != 0
    assert 'unknown field "spec.walltime"' in output


def test_cwl_input_object_is_kept_verbatim(control_plane: ControlPlane, namespace: str) -> None:
    inputs = {"file": {"class": "File", "location": "http://x/y", "secondaryFiles": [
        {"class": "File", "location": "http://x/y.idx"}]}, "n": 3, "names": ["a", "b c"]}
    code, output = apply(control_plane, namespace,
                         job(workflow="x.cwl", computeResource="local", input=inputs))
    assert code == 0, output
    stored = json.loads(control_plane.kubectl("get", "wfj", "j", "-n", namespace,
                                              "-o", "json").stdout)
    assert stored["spec"]["input"] == inputs
    assert stored["spec"]["cancel"] is False


def test_example_files_are_valid_yaml_documents() -> None:
    for example in EXAMPLES.glob("*.yaml"):
        documents = list(yaml.safe_load_all(Path(example).read_text()))
        assert documents and all("kind" in d for d in documents)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {"workflow": "other.cwl"}}, "the workflow of a submitted job cannot be changed"),
        ({"spec": {"input": {"n": 2}}}, "the input of a submitted job cannot be changed"),
        ({"spec": {"computeResource": "elsewhere"}},
         "a submitted job cannot move to another compute resource"),
        ({"spec": {"timeLimit": 99}}, "the time limit of a submitted job cannot be changed"),
        ({"spec": {"retry": {"attempts": 3}}},
         "the retry settings of a submitted job cannot be changed"),
    ],
)
def test_a_submitted_job_cannot_be_changed(
    control_plane: ControlPlane, namespace: str, change: dict[str, object], message: str
) -> None:
    code, output = apply(control_plane, namespace, job(
        workflow="x.cwl", computeResource="local", input={"n": 1}, timeLimit=60,
        retry={"attempts": 2}))
    assert code == 0, output
    patched = control_plane.kubectl("patch", "wfj", "j", "-n", namespace, "--type=merge",
                                    "-p", json.dumps(change), check=False)
    assert patched.returncode != 0
    assert message in patched.stderr


def test_cancelling_is_final(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, namespace, job(workflow="x.cwl", computeResource="local"))
    def patch(cancel: bool) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl("patch", "wfj", "j", "-n", namespace, "--type=merge",
                                     "-p", json.dumps({"spec": {"cancel": cancel}}), check=False)

    assert patch(True).returncode == 0
    undone = patch(False)
    assert undone.returncode != 0
    assert "a cancelled job cannot be un-cancelled" in undone.stderr


async def test_the_live_jobs_of_a_resource_are_listed_without_the_rest(
    kube: AsyncClient, namespace: str,
) -> None:
    """What an operator lists at a worker's start: that resource's jobs still to follow,
    filtered by the API server, not every job kept."""
    phases = {"new": None, "running": "Running", "done": "Success", "failed": "SystemError",
              "cancelling": "RunningCR", "elsewhere": "Running"}
    for name, phase in phases.items():
        await kube.create(WorkflowJob(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={"workflow": "x.cwl",
                  "computeResource": "other" if name == "elsewhere" else "cluster"}))
        if phase is not None:
            await kube_jobs.patch_status(kube, namespace=namespace, name=name,
                                         status={"phase": phase})
    live = await objects.live_jobs(kube, namespace, "cluster")
    assert sorted(body["metadata"]["name"] for body in live) == ["cancelling", "new", "running"]
    assert all(body["kind"] == "WorkflowJob" for body in live)
