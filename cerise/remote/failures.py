"""Remote commands that ran but did not do their work (as opposed to a connection that failed).

Kept apart from `cerise.remote.executor` so that the pure scheduler modules, which the
executor imports, can raise them too.
"""

from __future__ import annotations


class RemoteCommandFailed(RuntimeError):
    """A remote housekeeping command failed; the message has its stderr."""


class StatusUnavailable(RemoteCommandFailed):
    """The scheduler's status could not be read (its queue command failed, timed out or
    printed what cannot be read, or the output was cut short): nothing may be concluded
    about any job from this poll. The message has the scheduler's own words."""
