"""The whole workflow validated by cwltool's loader, the CWL reference implementation.

The loader reads the submitted text with every ``run`` resolved to an installed step's
document, given as text: its fetcher serves those documents from memory under a base URL
that never resolves and refuses every other URL, so validation touches neither the
network nor the file system. It finds what one document cannot show: a ``source`` or
``outputSource`` naming nothing, a step output or required step input the tool does not
have, types that do not connect. Added: the requirement and step rules are checked again
on what the loader read.

A validation takes milliseconds (the first in a process also loads the CWL schemas, about
half a second) and holds a lock, as cwltool is not known to be thread-safe: call it from
a worker thread, not on an event loop. Rules: docs/workflows.md.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from cwltool.context import LoadingContext
from cwltool.errors import WorkflowException
from cwltool.load_tool import load_tool
from cwltool.process import shortname
from cwltool.update import ORIGINAL_CWLVERSION
from cwltool.workflow import Workflow, default_make_tool
from schema_salad.exceptions import ValidationException
from schema_salad.fetcher import Fetcher

from cerise.model.cwl.messages import InvalidWorkflow
from cerise.model.cwl.requirements import ALLOWED_REQUIREMENTS

BASE = "https://cerise.invalid/"
"""Where the loader believes the documents are (``.invalid`` never resolves)."""
WORKFLOW_NAME = "workflow.cwl"
"""The submitted workflow's name in the loader's messages."""
MESSAGE_LIMIT = 2000

_UPGRADE_HINTS = (
    {"class": "LoadListingRequirement", "loadListing": "deep_listing"},
    {"class": "NetworkAccess", "networkAccess": True},
)
"""The hints cwltool's loader gives a CWL v1.0 workflow when it upgrades it."""

_lock = threading.Lock()


class _Documents(Fetcher):
    """The documents to validate, by URL; any other URL is refused."""

    def __init__(self, documents: Mapping[str, str]) -> None:
        self.documents = documents

    def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
        try:
            return self.documents[url]
        except KeyError:
            raise ValidationException(f"{url} is not an installed step") from None

    def check_exists(self, url: str) -> bool:
        return url in self.documents

    def urljoin(self, base_url: str, url: str) -> str:
        return urllib.parse.urljoin(base_url, url)


def validate(text: str, steps: Mapping[str, str]) -> None:
    """Validate the workflow `text` whose steps run the `steps` (installed path such as
    ``cerise/test/wc.cwl`` → document); InvalidWorkflow carries the loader's message."""
    documents = {BASE + path: document for path, document in steps.items()}
    documents[BASE + WORKFLOW_NAME] = text
    context = LoadingContext(
        {
            "fetcher_constructor": lambda cache, session: _Documents(documents),
            "construct_tool_object": default_make_tool,
            "disable_js_validation": True,  # it would run node
            "skip_schemas": True,  # $schemas would be fetched
        }
    )
    with _lock:
        try:
            process = load_tool(BASE + WORKFLOW_NAME, context)
            if not isinstance(process, Workflow):
                raise ValidationException("the document is not a Workflow")
            _refuse_what_the_rules_forbid(process, steps)
        except Exception as error:  # the loader raises anything on odd input
            raise InvalidWorkflow(_readable(error)) from None


def _refuse_what_the_rules_forbid(process: Workflow, steps: Mapping[str, str]) -> None:
    """Cerise's rules once more, on what the loader made of the document: only allowed
    requirements and hints, and every step runs an installed step or an inline Workflow
    whose steps do. (The rules were applied to the document as written; this is in case the
    loader reads a field where they did not look.) What the loader itself adds when it
    upgrades a CWL v1.0 document is not the user's doing, and is not judged."""
    upgraded = process.metadata.get(ORIGINAL_CWLVERSION) == "v1.0"
    added: list[Any] = list(_UPGRADE_HINTS) if upgraded else []
    pending: list[tuple[Workflow, list[Any]]] = [(process, added)]
    while pending:
        workflow, added = pending.pop()
        # cwltool hands an installed tool's SchemaDefRequirement to the step that runs it.
        injected = [
            step.embedded_tool.get_requirement("SchemaDefRequirement")[0]
            for step in workflow.steps
        ]
        for part in [workflow.tool, *(step.tool for step in workflow.steps)]:
            for entry in [*part.get("requirements", []), *part.get("hints", [])]:
                kind = str(entry.get("class")).removeprefix(BASE)  # the loader's name for "X"
                if part is workflow.tool and {**entry, "class": kind} in added:
                    added.remove({**entry, "class": kind})
                    continue
                if kind not in ALLOWED_REQUIREMENTS and entry not in injected:
                    raise ValidationException(
                        f"{kind!r} is not allowed in a submitted workflow (the CWL "
                        "loader found it under a name Cerise's rules do not know)"
                    )
        for step in workflow.steps:
            run = step.tool.get("run")
            if isinstance(step.embedded_tool, Workflow) and isinstance(run, Mapping):
                pending.append((step.embedded_tool, []))
            elif not isinstance(run, str) or run.removeprefix(BASE) not in steps:
                raise ValidationException(
                    f"step {shortname(step.id)} does not run an installed step"
                )


def _readable(error: Exception) -> str:
    """The loader's message without the base URL; lines that were indented to follow it
    move left by as much."""
    message = str(error).strip() or type(error).__name__
    if not isinstance(error, ValidationException | WorkflowException):
        message = f"the CWL loader failed: {type(error).__name__}: {message}"
    lines = []
    for line in message.splitlines():
        if line.startswith(" " * len(BASE)):
            line = line[len(BASE) :]
        lines.append(line.replace(BASE, ""))
    text = "\n".join(lines)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
