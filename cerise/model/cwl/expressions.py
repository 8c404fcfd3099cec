"""Expressions in a submitted workflow: CWL parameter references only, never JavaScript.

cwltool evaluates JavaScript in node's ``vm``, which is no sandbox: an expression can reach
``process`` and run any command as the resource's account. So every string of a submitted
workflow and its subworkflows (but the data in ``default`` and the text of ``doc`` and
``label``) is read the way cwltool's ``interpolate`` reads it, with cwltool's own scanner
(`cwl_utils.expression.scanner`) and parameter-reference grammar
(`cwl_utils.sandboxjs.param_re`): each ``$(…)`` must be a parameter reference such as
``$(inputs.x)`` or ``$(self.basename)``, which cwltool resolves in Python, and ``${…}``
blocks are refused. Rules: docs/workflows.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cwl_utils.errors import SubstitutionError
from cwl_utils.expression import scanner
from cwl_utils.sandboxjs import param_re
from cwl_utils.types import is_cwl_parameter_context_key

from cerise.model.cwl import document
from cerise.model.cwl.messages import InvalidWorkflow, quote, show


def check_expressions(workflow: Any) -> None:
    """Refuse any expression in `workflow` that is not a parameter reference, naming where."""
    for value, at, _ in document.nodes(workflow):
        if not isinstance(value, str):
            continue
        problem = problem_in(value)
        if problem:
            raise InvalidWorkflow(
                f"{show(at)}: {problem}; a submitted workflow may use parameter references "
                "such as $(inputs.name) or $(self.basename), but no JavaScript (it would run "
                "code of yours on the compute resource)"
            )


def problem_in(text: str) -> str | None:
    """What is wrong with the expressions in `text`, if anything."""
    try:
        for expression in expressions(text):
            if expression.startswith("{"):
                return f"the JavaScript block {quote('$' + expression)} is not allowed"
            match = param_re.match(expression)
            if match is None or not (
                is_cwl_parameter_context_key(match.group(1)) or expression == "(null)"
            ):
                return (
                    f"the expression {quote('$' + expression)} is not a parameter reference"
                )
    except SubstitutionError:
        return f"{quote(text)} has an unfinished $(…) or ${{…}}"
    return None


def expressions(text: str) -> Iterator[str]:
    """The ``(…)`` and ``{…}`` after each ``$`` that cwltool would evaluate in `text`, under
    either of its escaping behaviours (CWL v1.0's, and v1.1's and later)."""
    for behaviour in (1, 2):
        rest = text.strip()
        found = scanner(rest)
        while found:
            start, end = found
            if rest[start] == "$":
                yield rest[start + 1 : end]
            elif behaviour == 2 and rest[start : end + 1] in ("\\$(", "\\${"):
                end += 1  # an escaped "$(" or "${": cwltool skips its opening bracket too
            rest = rest[end:]
            found = scanner(rest)
