"""The steps of a submitted workflow: each runs an installed step, named by a safe path.

``run`` is ``<project>/<path>.cwl`` (at most `MAX_STEP_PATH` characters of plain path
components) naming an installed step; inline processes, URLs, absolute paths, ``..`` and
anything a shell or command line could misread are refused, and an unknown step is
refused with the closest installed names. Rules: docs/workflows.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NewType

from cerise.model.cwl import document, requirements
from cerise.model.cwl.messages import InvalidWorkflow, Pointer, did_you_mean, quote, show
from cerise.model.cwl.requirements import Resources
from cerise.model.cwl.values import FileReference, Mismatch, Origin, Walk

MAX_STEP_PATH = 1024

StepPath = NewType("StepPath", str)
"""An installed step, relative to the steps directories: ``cerise/test/wc.cwl``."""


@dataclass(frozen=True)
class Step:
    """A step of the workflow: its key in ``steps``, the installed step it runs, and the
    larger of what its entry in the workflow and the installed tool ask for."""

    id: str
    run: StepPath
    resources: Resources


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_STEP_FORM = "name an installed step as '<project>/<path>.cwl', e.g. 'cerise/test/wc.cwl'"


def parse_steps(
    raw: Any, installed: Mapping[str, str]
) -> tuple[tuple[Step, ...], tuple[FileReference, ...]]:
    """The steps in the workflow's ``steps`` and the Files in their inputs' defaults;
    `installed` maps each installed step's path to its document."""
    if isinstance(raw, list):
        raise InvalidWorkflow(
            "'steps' is a list; write it as a mapping from step name to step, e.g. "
            "steps: {count: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}"
        )
    if not isinstance(raw, Mapping):
        return (), ()  # absent or not valid CWL, which the loader refuses: nothing runs
    steps = []
    defaults: list[FileReference] = []
    for step_id, body in raw.items():
        name = f"step {quote(step_id)}"
        if not step_id:
            raise InvalidWorkflow("a step needs a non-empty name")
        if not isinstance(body, Mapping):
            continue  # not valid CWL, which the loader refuses: nothing runs
        own_id = body.get("id")
        if own_id is not None and (not isinstance(own_id, str) or own_id.lstrip("#") != step_id):
            raise InvalidWorkflow(f"{name} has a different id {quote(own_id)}; remove the 'id'")
        listed = requirements.listed(body, ("steps", step_id))
        requirements.check_allowed(listed, f"{name}: ")
        path = _step_path(name, body.get("run"), installed)
        tool = document.parse(installed[path], what=f"the installed step {path}")
        own = requirements.declared(tool) if isinstance(tool, Mapping) else Resources()
        steps.append(Step(step_id, path, requirements.resources(listed).larger(own)))
        defaults.extend(_step_defaults(name, body.get("in"), ("steps", step_id, "in")))
    return tuple(steps), tuple(defaults)


def _step_path(name: str, run: Any, installed: Mapping[str, str]) -> StepPath:
    if isinstance(run, Mapping):
        kind = run.get("class")
        what = f"an inline {kind}" if isinstance(kind, str) else "an inline process"
        raise InvalidWorkflow(
            f"{name} runs {what}; inline tools and workflows are not allowed, 'run' must "
            f"{_STEP_FORM}"
        )
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


def _step_defaults(name: str, raw: Any, at: Pointer) -> list[FileReference]:
    """File references in the ``default`` of a step's inputs (``in``, map or list form)."""
    if isinstance(raw, Mapping):
        entries = [(entry, (*at, key)) for key, entry in raw.items()]
    elif isinstance(raw, list):
        entries = [(entry, (*at, index)) for index, entry in enumerate(raw)]
    else:
        return []  # absent, or not valid CWL, which the loader refuses
    references = []
    for entry, entry_at in entries:
        if isinstance(entry, Mapping) and entry.get("default") is not None:
            walk = Walk(Origin.WORKFLOW)
            try:
                references.extend(walk.any(entry["default"], (*entry_at, "default")))
            except Mismatch as error:
                raise InvalidWorkflow(
                    f"{name}: default at {show(error.at)}: {error.reason}"
                ) from None
    return references
