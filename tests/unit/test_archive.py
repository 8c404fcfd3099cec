"""The archive's pure parts: what is kept of a job, the operator's settings, the migrations,
and the merged order of live and archived jobs."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cerise.apiserver import history
from cerise.archive import records, schema
from cerise.operator import archiving

LOG_URL = "http://localhost:29593/files/logs/u-1.log"


def job(name: str = "count-words-1", uid: str = "u-1", phase: str = "Success",
        created: str = "2026-12-06T10:00:00Z", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
        "metadata": {
            "name": name, "namespace": "team-a", "uid": uid, "creationTimestamp": created,
            "resourceVersion": "42", "managedFields": [{"manager": "kubectl"}],
            "annotations": {"cerise.dev/wes-tags": '{"project": "x"}',
                            "cerise.dev/last-handled-configuration": "{...}"}},
        "spec": {"computeResource": "local", "workflow": "wc.cwl", "input": {"n": 1}},
        "status": {"phase": phase, "finishedAt": "2026-12-06T10:05:00+00:00",
                   "output": {"counts": {"class": "File"}}, "message": "done",
                   "steps": [{"name": "wc", "state": "Success"}],
                   "conditions": [{"type": "Succeeded", "status": "True"}], **status},
    }


def test_a_record_keeps_the_job_as_the_doors_show_it() -> None:
    found = records.record(job(), LOG_URL)
    assert (found.uid, found.namespace, found.name, found.resource, found.phase) == (
        "u-1", "team-a", "count-words-1", "local", "Success")
    assert found.created == "2026-12-06T10:00:00Z"
    assert found.finished_at == datetime.datetime(2026, 12, 6, 10, 5, tzinfo=datetime.UTC)
    body = found.body
    assert body["spec"] == job()["spec"]
    assert body["status"]["output"] == {"counts": {"class": "File"}}
    assert body["status"]["steps"] and body["status"]["conditions"]
    assert body["status"]["message"] == "done" and body["status"]["logUrl"] == LOG_URL
    assert "managedFields" not in body["metadata"]
    assert body["metadata"]["annotations"] == {"cerise.dev/wes-tags": '{"project": "x"}'}
    assert records.order(body) == ("2026-12-06T10:00:00Z", "count-words-1")


@pytest.mark.parametrize("phase", ["Running", "StagingOut", "Waiting"])
def test_only_a_finished_job_is_archived(phase: str) -> None:
    with pytest.raises(ValueError, match="has not finished"):
        records.record(job(phase=phase), LOG_URL)


def test_an_archive_prune_is_told_by_its_annotation() -> None:
    body = job()
    assert not records.is_archive_prune(body)
    body["metadata"]["annotations"][records.ARCHIVED] = "true"
    assert records.is_archive_prune(body)
    assert records.ARCHIVED not in records.record(body, LOG_URL).body["metadata"]["annotations"]


def test_without_a_url_there_is_no_archive() -> None:
    assert archiving.settings({}) is None
    assert archiving.settings({"CERISE_ARCHIVE_URL": "  "}) is None


def test_the_archiving_settings() -> None:
    found = archiving.settings({"CERISE_ARCHIVE_URL": "postgresql://db/cerise",
                                "CERISE_ARCHIVE_AFTER": "1d", "CERISE_JOB_RETENTION": "30d",
                                "CERISE_ARCHIVE_BATCH": "50"})
    assert found is not None
    assert (found.default, found.retention, found.batch) == (86400, 30 * 86400, 50)
    defaults = archiving.settings({"CERISE_ARCHIVE_URL": "postgresql://db/cerise"})
    assert defaults is not None and defaults.default is None and defaults.interval == 60


@pytest.mark.parametrize(("environ", "problem"), [
    ({"CERISE_ARCHIVE_AFTER": "soon"}, "CERISE_ARCHIVE_AFTER"),
    ({"CERISE_ARCHIVE_BATCH": "2.5"}, "whole number"),
    ({"CERISE_ARCHIVE_SWEEP_SECONDS": "-1"}, "positive"),
])
def test_bad_archiving_settings_say_what_is_wrong(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        archiving.settings({"CERISE_ARCHIVE_URL": "postgresql://db/cerise", **environ})


def test_the_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [migration.version for migration in schema.migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert "CREATE TABLE archived_jobs" in schema.migrations()[0].text


def test_live_and_archived_jobs_merge_in_one_order_each_once() -> None:
    live = [job("b", "u-b", created="2026-12-06T10:00:02Z"),
            job("d", "u-d", created="2026-12-06T10:00:04Z")]
    archived = [job("a", "u-a", created="2026-12-06T10:00:01Z"),
                job("b", "u-b", created="2026-12-06T10:00:02Z"),
                job("c", "u-c", created="2026-12-06T10:00:03Z")]
    merged = history._merged(live, archived, newest_first=False)
    assert [body["metadata"]["name"] for body in merged] == ["a", "b", "c", "d"]
    assert merged[1] is live[0]
    newest = history._merged(live[::-1], archived[::-1], newest_first=True)
    assert [body["metadata"]["name"] for body in newest] == ["d", "c", "b", "a"]
