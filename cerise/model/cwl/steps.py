"""The steps of a submitted workflow: each runs an installed step, named by a safe path,
or an inline Workflow whose steps do.

``run`` is ``<project>/<path>.cwl`` (at most `MAX_STEP_PATH` characters of plain path
components) naming an installed step; inline tools, URLs, absolute paths, ``..`` and
anything a shell or command line could misread are refused, and an unknown step is
refused with the closest installed names. Rules: docs/workflows.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NewType

from cerise.model.cwl import document, requirements, types
from cerise.model.cwl.messages import InvalidWorkflow, Pointer, did_you_mean, quote, show
from cerise.model.cwl.requirements import Resources
from cerise.model.cwl.values import FileReference, Mismatch, Origin, Walk

MAX_STEP_PATH = 1024

StepPath = NewType("StepPath", str)
"""An installed step, relative to the steps directories: ``cerise/test/wc.cwl``."""


@dataclass(frozen=True)
class Step:
    """An installed step the workflow runs: its name (``sub/wc`` for step ``wc`` of the
    subworkflow of step ``sub``), its path, the larger of what its entry in the workflow
    and the installed tool ask for, and where its entry is in the document."""

    id: str
    run: StepPath
    resources: Resources
    at: Pointer


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_STEP_FORM = "name an installed step as '<project>/<path>.cwl', e.g. 'cerise/test/wc.cwl'"


def entries(raw: Any, at: Pointer) -> list[tuple[str, Mapping[str, Any], Pointer]]:
    """The steps of a process's ``steps`` (map or list form): name, body and pointer.
    What is not valid CWL is left out, for the loader to refuse."""
    if isinstance(raw, Mapping):
        found = [(key, body, (*at, key)) for key, body in raw.items()]
    elif isinstance(raw, list):
        found = []
        for index, body in enumerate(raw):
            own_id = body.get("id") if isinstance(body, Mapping) else None
            if not isinstance(own_id, str):
                raise InvalidWorkflow(f"{show((*at, index))}: each step in list form needs an 'id'")
            found.append((types.short_name(own_id), body, (*at, index)))
    else:
        return []  # absent or not valid CWL, which the loader refuses: nothing runs
    result = []
    for step_id, body, step_at in found:
        name = f"step {quote(step_id)}"
        if not step_id:
            raise InvalidWorkflow(f"{show(step_at)}: a step needs a non-empty name")
        if not isinstance(body, Mapping):
            continue  # not valid CWL, which the loader refuses: nothing runs
        own_id = body.get("id")
        if isinstance(raw, Mapping) and own_id is not None and (
            not isinstance(own_id, str) or own_id.lstrip("#") != step_id
        ):
            raise InvalidWorkflow(f"{name} has a different id {quote(own_id)}; remove the 'id'")
        result.append((step_id, body, step_at))
    return result


def inline_workflow(name: str, run: Mapping[str, Any]) -> None:
    """Refuse an inline ``run`` unless it is a Workflow (whose steps are checked in turn)."""
    kind = run.get("class")
    if kind != "Workflow":
        what = f"an inline {kind}" if isinstance(kind, str) else "an inline process"
        raise InvalidWorkflow(
            f"{name} runs {what}; inline tools are not allowed, 'run' must {_STEP_FORM} "
            "(or be an inline class: Workflow whose steps do)"
        )
    for key in run:
        if key.startswith("$"):
            raise InvalidWorkflow(
                f"{name}: {quote(key)} is not allowed in an inline workflow: it can pull in "
                "outside content"
            )


def installed_step(
    step_id: str, name: str, body: Mapping[str, Any], at: Pointer, installed: Mapping[str, str]
) -> Step:
    """The installed step that the step `body` runs (its ``run`` is a string)."""
    path = _step_path(name, body.get("run"), installed)
    tool = document.parse(installed[path], what=f"the installed step {path}")
    own = requirements.declared(tool) if isinstance(tool, Mapping) else Resources()
    listed = requirements.listed(body, at)
    return Step(step_id, path, requirements.resources(listed).larger(own), at)


def _step_path(name: str, run: Any, installed: Mapping[str, str]) -> StepPath:
    if not isinstance(run, str):
        raise InvalidWorkflow(f"{name}: 'run' must be a string; it must {_STEP_FORM}")
    problem = _path_problem(run)
    if problem:
        raise InvalidWorkflow(f"{name} runs {quote(run)}, which {problem}; 'run' must {_STEP_FORM}")
    path = run.removeprefix("./")
    if path not in installed:
        close = did_you_mean(path, [known for known in installed if known.endswith(".cwl")])
        hint = f"; did you mean {close}?" if close else ""
        raise InvalidWorkflow(f"{name} runs {quote(run)}, which is not an installed step{hint}")
    return StepPath(path)


def _path_problem(run: str) -> str | None:
    if not run:
        return "is empty"
    if len(run) > MAX_STEP_PATH:
        return f"is longer than {MAX_STEP_PATH} characters"
    if _WHITESPACE_OR_CONTROL.search(run):
        return "contains whitespace or a control character"
    if "\\" in run:
        return "contains a backslash"
    if _SCHEME.match(run):
        return "is a URL"
    if run.startswith("/"):
        return "is an absolute path"
    parts = run.removeprefix("./").split("/")
    if ".." in parts:
        return "contains '..'"
    if "." in parts:
        return "contains a '.' component"
    if "" in parts:
        return "has an empty component ('//' or a trailing '/')"
    if any(part.startswith((".", "-")) for part in parts):
        return "has a component starting with '.' or '-'"
    if not all(_COMPONENT.fullmatch(part) for part in parts):
        return "contains characters other than letters, digits, '_', '-', '.' and '/'"
    if len(parts) < 2 or not run.endswith(".cwl"):
        return "is not of the form '<project>/<path>.cwl'"
    return None


def step_defaults(name: str, raw: Any, at: Pointer) -> list[FileReference]:
    """File references in the ``default`` of a step's inputs (``in``, map or list form)."""
    if isinstance(raw, Mapping):
        found = [(entry, (*at, key)) for key, entry in raw.items()]
    elif isinstance(raw, list):
        found = [(entry, (*at, index)) for index, entry in enumerate(raw)]
    else:
        return []  # absent, or not valid CWL, which the loader refuses
    references = []
    for entry, entry_at in found:
        if isinstance(entry, Mapping) and entry.get("default") is not None:
            walk = Walk(Origin.WORKFLOW)
            try:
                references.extend(walk.any(entry["default"], (*entry_at, "default")))
            except Mismatch as error:
                raise InvalidWorkflow(
                    f"{name}: default at {show(error.at)}: {error.reason}"
                ) from None
    return references
