"""Job names: what every door (REST, WES, the CLI, the CRD) accepts, and showing any name safely.

The original Cerise took any string as a job's name, and so do we, but for characters that
break logs and line-based readers or reorder what a reader sees: control characters (Unicode
category Cc: NUL, tab, CR, LF, NEL U+0085, ...), the line and paragraph separators U+2028 and
U+2029, the bidirectional controls U+061C, U+200E/F, U+202A-U+202E and U+2066-U+2069, and lone
surrogates. `problem` says what is wrong with a name; `printable` escapes those characters
in text that came in some other way (an old object, a log message) before it is shown.
The CRD's rule on ``spec.name`` (crds/workflowjobs.yaml) is `CRD_RULE`.
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 256
"""The longest job name (the CRD's maxLength)."""
LINE_SEPARATORS = frozenset("\u2028\u2029")
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
CRD_RULE = (r"!self.matches(r'[\p{Cc}\x{2028}\x{2029}\x{061C}\x{200E}\x{200F}"
            r"\x{202A}-\x{202E}\x{2066}-\x{2069}]')")
"""The CEL rule the WorkflowJob CRD applies to ``spec.name`` (RE2 syntax; no surrogate can
reach the API server, whose JSON is UTF-8)."""
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")


def _kind(char: str) -> str | None:
    """What makes `char` unsafe in a name, or None if it is fine."""
    category = unicodedata.category(char)
    if char in LINE_SEPARATORS:
        return "a line or paragraph separator"
    if char in "\r\n\x0b\x0c\x1c\x1d\x1e\x85":
        return "a line break"
    if category == "Cc":
        return "a control character"
    if char in BIDI_CONTROLS:
        return "a bidirectional text control"
    if category == "Cs":
        return "a lone surrogate (not valid Unicode text)"
    return None


def problem(text: str, what: str = "the job name",
            max_length: int | None = MAX_LENGTH) -> str | None:
    """Why `text` cannot be a name (a sentence that starts with `what`), or None if it can."""
    if max_length is not None and len(text) > max_length:
        return f"{what} is {len(text)} characters long; at most {max_length} are allowed"
    found = _UNSAFE.search(text)
    if found is None:
        return None
    char = found.group()
    return (f"{what} contains {_kind(char)} (U+{ord(char):04X}) at character "
            f"{found.start() + 1}; use printable characters only")


def printable(text: str) -> str:
    """`text` with every character a name may not hold written as a ``\\uXXXX`` escape.

    Inside a JSON string the escape means the same character, so this also makes a JSON
    line safe for readers that split lines on Unicode separators."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
