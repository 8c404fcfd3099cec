"""Project versions: parsing and ordering (pure).

A version is release numbers (``1.2.0``), optionally followed by a pre-release part
(``-rc.1``, ``.dev``, ``-alpha``) and build metadata after ``+``, as a Specialisation's
``version`` pattern allows. Ordering follows Semantic Versioning 2.0, with the original
Cerise's ``.dev`` added:

* release numbers compare as numbers (``0.10.0 > 0.9.0``; the original compared strings),
  missing ones count as 0 (``1.0 == 1.0.0``);
* a pre-release is lower than its release (``1.0.0-rc.1 < 1.0.0``); its identifiers compare
  one by one, numbers below words, words alphabetically, a longer list higher when all
  before are equal; letters and digits run together are separate identifiers
  (``rc10 > rc9``);
* ``dev`` is the lowest identifier (``1.3.0.dev < 1.3.0-alpha < 1.3.0``), and a version with
  a ``dev`` identifier is a development version, reinstalled on every operator start and
  every change of its Specialisation;
* build metadata does not count (``1.0.0+a == 1.0.0+b``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VERSION = re.compile(r"(?P<release>[0-9]+(?:\.[0-9]+)*)(?P<pre>[^+]*)(?:\+(?P<build>.*))?")
_PRE = re.compile(r"(?:[.-]?(?P<words>[A-Za-z0-9.-]*))?")
_IDENTIFIER = re.compile(r"[0-9]+|[A-Za-z]+")
_DEV = "dev"

Identifier = tuple[int, int, str]
"""A pre-release identifier as a sort key: (kind, number, word); dev < numbers < words."""


class InvalidVersion(ValueError):
    """A version string that is not release numbers with an optional suffix."""


@dataclass(frozen=True)
class Version:
    """A parsed version; compare with `key` (or the ordering operators)."""

    text: str = field(compare=False)
    release: tuple[int, ...]
    """Release numbers without trailing zeros (1.0.0 → (1,))."""
    pre: tuple[Identifier, ...]
    """Pre-release identifiers; empty for a release."""

    @property
    def dev(self) -> bool:
        """Whether this is a development version (reinstalled on every start and change)."""
        return any(kind == 0 for kind, _, _ in self.pre)

    @property
    def key(self) -> tuple[tuple[int, ...], int, tuple[Identifier, ...]]:
        """The sort key: release, then releases above their pre-releases."""
        return self.release, 0 if self.pre else 1, self.pre

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Version:
    """Parse a version; InvalidVersion if it does not start with release numbers."""
    match = _VERSION.fullmatch(text)
    words = _PRE.fullmatch(match.group("pre")) if match else None
    if match is None or words is None:
        raise InvalidVersion(f"{text!r} is not a version such as 1.2.0, 1.3.0-rc.1 or 1.3.0.dev")
    release = [int(part) for part in match.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    return Version(text=text, release=tuple(release),
                   pre=tuple(_identifier(item) for item in _IDENTIFIER.findall(
                       words.group("words") or "")))


def _identifier(item: str) -> Identifier:
    if item.isdigit():
        return 1, int(item), ""
    if item.lower() == _DEV:
        return 0, 0, ""
    return 2, 0, item
