"""The published cerise-client 0.3.1, unchanged, against the apiserver, operator and cwltool."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import cerise_client
import pytest

from tests.integration import http_calls
from tests.integration.api_fixtures import Api, poll_until

pytestmark = pytest.mark.integration


def workflow(steps: dict[str, object], inputs: dict[str, object],
             outputs: dict[str, object]) -> bytes:
    return json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": inputs,
                       "outputs": outputs, "steps": steps}).encode()


WC = workflow({"wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}},
              {"file": "File"}, {"output": {"type": "File", "outputSource": "wc/output"}})
WITH_INDEX = workflow(
    {"cat": {"run": "cerise/test/cat_with_index.cwl", "in": {"file": "file"},
             "out": ["output"]}},
    {"file": {"type": "File", "secondaryFiles": [".idx"]}},
    {"output": {"type": "File", "outputSource": "cat/output"}})
COUNT_FILES = workflow(
    {"count": {"run": "cerise/test/count_files.cwl", "in": {"files": "files"},
               "out": ["counts"]}},
    {"files": "File[]"}, {"counts": {"type": "File", "outputSource": "count/counts"}})
SLEEP = workflow({"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": "delay"},
                            "out": []}}, {"delay": "int"}, {})


@pytest.fixture
def service(single_user_api: Api) -> cerise_client.Service:
    """The client as a scientist makes it: host and port, nothing else."""
    return cerise_client.Service("http://localhost", int(single_user_api.url.rsplit(":", 1)[1]))


def new_name() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


def finished(job: cerise_client.Job, timeout: float = 60.0) -> str:
    poll_until(lambda: not job.is_running(), timeout, f"job {job.id} ending")
    state: str = job.state
    return state


def sleeping(delay: int) -> bool:
    found = subprocess.run(["pgrep", "-f", f"^sleep {delay}$"], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_a_job_runs_end_to_end(service: cerise_client.Service, tmp_path: Path) -> None:
    source = tmp_path / "words.txt"
    source.write_text("one two three\nfour five\n")
    job = service.create_job(new_name())
    job.set_workflow(WC)
    job.add_input_file("file", str(source))
    job.run()
    assert job.state in ("Waiting", "Running")
    assert finished(job) == "Success"
    assert job.outputs["output"].text.split()[:3] == ["2", "5", "24"]
    saved = tmp_path / "saved.txt"
    job.outputs["output"].save_as(str(saved))
    assert saved.read_text().split()[:2] == ["2", "5"]
    assert "Final process status is success" in job.log
    service.destroy_job(job)
    with pytest.raises(cerise_client.JobNotFound):
        service.get_job_by_id(job.id)


def test_an_input_file_named_as_scientists_name_them_runs(
    service: cerise_client.Service,
) -> None:
    """The client sends the uploaded file's own name as its basename; cwltool refuses
    spaces, brackets and quotes there, so the tool is given a portable one."""
    job = service.create_job(new_name())
    job.set_workflow(WC)
    job.add_input_file("file", ("run 3 (final) \u2013 it's $HOME.txt", b"one two\nthree\n"))
    job.run()
    assert finished(job) == "Success", job.log
    assert job.outputs["output"].text.split()[:3] == ["2", "3", "14"]


def test_an_existing_job_name_is_refused(service: cerise_client.Service) -> None:
    name = new_name()
    service.create_job(name)
    with pytest.raises(cerise_client.JobAlreadyExists):
        service.create_job(name)


def test_secondary_files_and_file_arrays(service: cerise_client.Service) -> None:
    indexed = service.create_job(new_name())
    indexed.set_workflow(WITH_INDEX)
    indexed.add_input_file("file", ("data.txt", b"data\n"))
    indexed.add_secondary_file("file", ("data.txt.idx", b"index\n"))
    indexed.run()
    arrays = service.create_job(new_name())
    arrays.set_workflow(COUNT_FILES)
    arrays.add_input_file("files", [("one.txt", b"1\n"), ("two.txt", b"1\n2\n")])
    arrays.run()
    assert finished(indexed) == "Success"
    assert indexed.outputs["output"].text == "data\nindex\n"
    assert finished(arrays) == "Success"
    assert arrays.outputs["counts"].text.split()[-2:] == ["3", "total"]


def test_jobs_are_listed_and_found_as_submitted(service: cerise_client.Service) -> None:
    name = new_name()
    job = service.create_job(name)
    job.set_workflow(WC)
    job.add_input_file("file", ("a file with spaces.txt", b"x\n"))
    job.set_input("extra", 1.5)
    job.run()
    by_id = service.get_job_by_id(job.id)
    by_name = service.get_job_by_name(name)
    listed = [found for found in service.list_jobs() if found.id == job.id]
    for found in (by_id, by_name, *listed):
        assert (found.id, found.name) == (job.id, name)
        assert found._workflow_url == job._workflow_url
        assert found._input_desc == job._input_desc
    assert len(listed) == 1
    assert finished(job) == "PermanentFailure"  # 'extra' is not an input of the workflow
    assert "extra" in job.log


def start_sleeping(service: cerise_client.Service) -> tuple[cerise_client.Job, int]:
    """A job whose runner sleeps for a time no other test uses, once it runs."""
    delay = 1000 + uuid.uuid4().int % 9000
    job = service.create_job(new_name())
    job.set_workflow(SLEEP)
    job.set_input("delay", delay)
    job.run()
    poll_until(lambda: sleeping(delay), what="the runner starting")
    return job, delay


def test_cancel_of_a_running_job(service: cerise_client.Service) -> None:
    job, delay = start_sleeping(service)
    job.cancel()
    assert finished(job) == "Cancelled"
    poll_until(lambda: not sleeping(delay), 10, "the runner stopping")


def test_destroying_a_running_job_stops_it(service: cerise_client.Service) -> None:
    job, delay = start_sleeping(service)
    service.destroy_job(job)
    with pytest.raises(cerise_client.JobNotFound):
        service.get_job_by_id(job.id)
    poll_until(lambda: not sleeping(delay), 20, "the runner stopping")


def test_outputs_are_gone_once_the_job_is_deleted(
    service: cerise_client.Service, single_user_api: Api
) -> None:
    job = service.create_job(new_name())
    job.set_workflow(WC)
    job.add_input_file("file", ("in.txt", b"a\n"))
    job.run()
    assert finished(job) == "Success"
    output = job.outputs["output"]
    assert output.text == "a\n" or output.text.split()[0] == "1"
    service.destroy_job(job)
    poll_until(lambda: http_calls.get(output._uri).status_code == 404, 20,
               "the output disappearing")
    with pytest.raises(cerise_client.MissingOutput):
        output.text  # noqa: B018 — reading it is the test
