"""The pure parts of the REST APIs: names, settings, WES requests and attachments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cerise.apiserver import errors, history, workflowjobs
from cerise.apiserver.routers import wes
from cerise.apiserver.settings import AuthMode, Settings
from cerise.model.exchange import Layout

OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.mark.parametrize("name", [None, "", "demo", "a/b/c", "It's \"quoted\"", "ünïcode",
                                  "-", "x" * 256, "UPPER_case.name"])
def test_any_name_gives_a_valid_unique_object_name(name: str | None) -> None:
    first, second = workflowjobs.object_name(name), workflowjobs.object_name(name)
    assert OBJECT_NAME.fullmatch(first) and len(first) <= 63
    assert first != second


def test_object_names_resemble_the_name() -> None:
    assert workflowjobs.object_name("Count Words").startswith("count-words-")


@pytest.mark.parametrize(("name", "problem"), [
    ("a\x00b", "control character"), ("line\nbreak", "line break"),
    ("n" * 257, "257 characters")])
def test_unusable_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(errors.BadRequest, match=problem):
        workflowjobs.check_name(name)


@pytest.mark.parametrize(("workflow", "problem"), [
    ("", "empty"), ("  \n", "empty"), ("a\x00", "NUL"), ("x" * 300_000, "file exchange")])
def test_unusable_workflows_are_refused(workflow: str, problem: str) -> None:
    with pytest.raises(errors.BadRequest, match=problem):
        workflowjobs.check_workflow(workflow)


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env({"CERISE_AUTH": "kubernetes", "CERISE_NAMESPACE": "lab",
                                  "CERISE_EXCHANGE_DIR": "/srv/x",
                                  "CERISE_EXCHANGE_URL": "https://c.example/ns/{namespace}/files",
                                  "CERISE_DEFAULT_RESOURCE": "hpc"})
    assert settings.auth is AuthMode.KUBERNETES
    assert (settings.namespace, settings.default_resource) == ("lab", "hpc")
    exchange = settings.exchange.for_namespace("team-a")
    assert exchange.root == Path("/srv/x/team-a")
    assert exchange.url == "https://c.example/ns/team-a/files"


def test_cluster_mode_needs_an_exchange_per_namespace() -> None:
    with pytest.raises(ValueError, match="namespace"):
        Settings.from_env({"CERISE_AUTH": "kubernetes",
                           "CERISE_EXCHANGE_URL": "https://c.example/files"})
    with pytest.raises(ValueError, match="CERISE_AUTH"):
        Settings.from_env({"CERISE_AUTH": "maybe"})


def test_a_shared_exchange_is_the_same_for_every_namespace() -> None:
    layout = Layout(root=Path("/srv/x"), url="http://localhost:29593/files")
    assert layout.for_namespace("a") == layout.for_namespace("b")
    assert not layout.per_namespace
    with pytest.raises(ValueError):
        Layout(root=Path("/srv"), url="http://h/ns/{namespace}/files").for_namespace("../x")


BASE = "http://h/files/input/wes-runs/run-1/"


@pytest.mark.parametrize(("location", "expected"), [
    ("words.txt", BASE + "data/words.txt"),                     # a relative name, by suffix
    ("data/words.txt", BASE + "data/words.txt"),
    ("file:///home/me/project/data/words.txt", BASE + "data/words.txt"),  # wes-client
    ("/home/me/project/data/words.txt", BASE + "data/words.txt"),
    ("other.txt", BASE + "other.txt"),                          # relative, no attachment
    ("https://example.org/words.txt", "https://example.org/words.txt"),
])
def test_parameter_locations_map_onto_attachments(location: str, expected: str) -> None:
    params = {"f": {"class": "File", "location": location,
                    "secondaryFiles": [{"class": "File", "path": location}]},
              "n": 3, "s": "words.txt"}
    moved = wes._relocated(params, ["main.cwl", "data/words.txt"], BASE)
    assert moved["f"]["location"] == expected
    assert moved["f"]["secondaryFiles"][0]["location"] == expected
    assert "path" not in moved["f"]["secondaryFiles"][0]
    assert (moved["n"], moved["s"]) == (3, "words.txt")


def test_the_workflow_url_names_an_attachment_or_is_absolute() -> None:
    assert wes._workflow_location("./main.cwl", ["main.cwl"], BASE) == BASE + "main.cwl"
    assert wes._workflow_location("https://x/wf.cwl", [], BASE) == "https://x/wf.cwl"
    with pytest.raises(errors.BadRequest, match="attachment"):
        wes._workflow_location("missing.cwl", ["main.cwl"], BASE)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "", "a\x00b"])
def test_attachment_names_stay_inside_the_run(name: str) -> None:
    with pytest.raises(errors.BadRequest):
        wes._attachment_name(name)


@pytest.mark.parametrize(("fields", "problem"), [
    ({}, "workflow_url"),
    ({"workflow_url": "a.cwl", "workflow_params": ""}, "workflow_params is missing"),
    ({"workflow_url": "a.cwl", "workflow_params": " "}, "workflow_params is missing"),
    ({"workflow_url": "a.cwl", "workflow_type": "WDL"}, "WDL"),
    ({"workflow_url": "a.cwl", "workflow_type_version": "v2.0"}, "v2.0"),
    ({"workflow_url": "a.cwl", "workflow_params": "[1]"}, "JSON object"),
    ({"workflow_url": "a.cwl", "workflow_params": "{"}, "not valid JSON"),
    ({"workflow_url": "a.cwl", "workflow_params": "[" * 99 + "]" * 99}, "more than 64 deep"),
    ({"workflow_url": "a.cwl", "workflow_engine_parameters": '{"cores": 2}'}, "cores"),
    ({"workflow_url": "a.cwl", "workflow_engine_parameters": '{"compute_resource": 1}'},
     "string"),
    ({"workflow_url": "a.cwl", "tags": '{"a": 1}'}, "tags"),
    ({"workflow_url": "a.cwl", "workflow_engine": "nextflow"}, "nextflow"),
])
def test_bad_run_requests_are_refused(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(errors.BadRequest, match=problem):
        wes._run_request({"workflow_params": "{}", **fields})


def test_workflow_params_are_required() -> None:
    """WES 1.1 marks them REQUIRED ({} for a workflow without inputs)."""
    with pytest.raises(errors.BadRequest, match="workflow_params is missing"):
        wes._run_request({"workflow_url": "a.cwl"})


def test_a_run_request_is_kept_as_given() -> None:
    kept = wes._run_request({"workflow_url": "a.cwl", "workflow_type": "cwl",
                             "workflow_type_version": "v1.0", "tags": '{"p": "x"}',
                             "workflow_params": '{"n": 1}',
                             "workflow_engine_parameters": '{"compute_resource": "hpc"}'})
    assert kept == {"workflow_url": "a.cwl", "workflow_type": "CWL",
                    "workflow_type_version": "v1.0", "tags": {"p": "x"},
                    "workflow_params": {"n": 1},
                    "workflow_engine_parameters": {"compute_resource": "hpc"}}


def test_page_tokens_round_trip_and_garbage_is_refused() -> None:
    order = ("2026-11-25T00:00:00Z", "job-1")
    assert history.token_place(history.page_token(order)) == order
    with pytest.raises(errors.BadRequest):
        history.token_place("garbage")


def test_a_step_cut_off_by_the_end_of_its_job_ends_with_it() -> None:
    status: dict[str, Any] = {
        "phase": "Cancelled", "finishedAt": "2026-11-25T10:00:09Z",
        "steps": [{"name": "a", "state": "Success", "startTime": "2026-11-25T10:00:00Z",
                   "endTime": "2026-11-25T10:00:01Z"},
                  {"name": "b", "state": "Running", "startTime": "2026-11-25T10:00:02Z"}]}
    body = {"metadata": {"name": "j"}, "status": status}
    first, second = wes._tasks(body)
    assert (first.exit_code, first.end_time) == (0, "2026-11-25T10:00:01Z")
    assert second.end_time == "2026-11-25T10:00:09Z"
    assert second.system_logs == ["state: Cancelled"]
    status["phase"] = "Running"
    assert wes._tasks(body)[1].end_time is None
