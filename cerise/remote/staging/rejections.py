"""What staging refuses: the user's inputs (a PermanentFailure) or the runner's outputs."""

from __future__ import annotations


class InputRejected(Exception):
    """An input cannot be staged because of what the user gave; the message says why."""


class OutputRejected(Exception):
    """The runner's output cannot be published (a SystemError); the message says why."""
