"""Workflows and Specialisation archives given by URL pass the same web fence as inputs:
a refused address fails them at once, naming the rule (nothing is connected to)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerise.model.cwl import InvalidWorkflow
from cerise.model.exchange import Exchange
from cerise.model.project_files import InvalidProject
from cerise.model.webfence import Fence
from cerise.operator import sources, workflows

EXCHANGE = Exchange(root=Path("/srv/exchange"), url="http://localhost:29593/files")


async def test_a_workflow_from_a_private_address_is_refused() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        await workflows.workflow_text("http://10.0.0.5/wf.cwl", EXCHANGE, Fence())
    assert str(info.value) == (
        "the workflow could not be downloaded: http://10.0.0.5/wf.cwl: 10.0.0.5 is in a "
        "private range (10.0.0.0/8); allow it with spec.webInputs.allow of the ComputeResource "
        "or the operator's CERISE_WEB_ALLOW")


async def test_an_archive_from_the_metadata_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidProject,
                       match=r"169\.254\.169\.254 is in the cloud metadata endpoint .*no allow"):
        await sources.download("http://169.254.169.254/latest/p.tar.gz",
                               tmp_path / "p.tar.gz", Fence())


async def test_the_operators_environment_is_the_default_fence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CERISE_WEB_DENY", "192.0.2.0/24")
    with pytest.raises(InvalidWorkflow, match="refused by the operator's CERISE_WEB_DENY"):
        await workflows.workflow_text("http://192.0.2.1/wf.cwl", EXCHANGE)
