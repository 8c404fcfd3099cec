"""A job's workflow is validated once per text and set of installed steps: the same
workflow submitted again (a sweep over inputs) is taken up without the CWL loader."""

from __future__ import annotations

import json

import pytest

from cerise.model import cwl
from cerise.model.cwl import validation
from cerise.operator.workflows import Checked
from tests.unit.cwl_samples import INSTALLED, workflow_doc


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each validation by the CWL loader, as it happens."""
    seen: list[str] = []
    real = validation.validate

    def counted(text: str, steps: dict[str, str]) -> None:
        seen.append(text)
        real(text, steps)

    monkeypatch.setattr(validation, "validate", counted)
    return seen


async def test_the_same_workflow_again_is_not_validated_again(loads: list[str]) -> None:
    checked, text = Checked(), json.dumps(workflow_doc())
    first = await checked.parse(text, INSTALLED)
    again = await checked.parse(text, INSTALLED)
    assert again == first and len(loads) == 1
    await checked.parse(json.dumps(workflow_doc(label="another")), INSTALLED)
    assert len(loads) == 2, "another workflow is validated"


async def test_other_installed_steps_validate_the_workflow_again(loads: list[str]) -> None:
    checked, text = Checked(), json.dumps(workflow_doc())
    await checked.parse(text, INSTALLED)
    without_wc = {path: doc for path, doc in INSTALLED.items() if path != "cerise/test/wc.cwl"}
    with pytest.raises(cwl.InvalidWorkflow):
        await checked.parse(text, without_wc)
    assert len(loads) == 1  # refused by the rules before the loader: wc is not installed
    await checked.parse(text, dict(INSTALLED))
    assert len(loads) == 2


async def test_only_a_few_workflows_are_remembered(loads: list[str]) -> None:
    checked = Checked(limit=2)
    texts = [json.dumps(workflow_doc(label=f"w{n}")) for n in range(3)]
    for text in texts:
        await checked.parse(text, INSTALLED)
    await checked.parse(texts[0], INSTALLED)  # the oldest was forgotten
    await checked.parse(texts[2], INSTALLED)
    assert len(loads) == 4
