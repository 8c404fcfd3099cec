"""What goes wrong on a compute resource: it cannot be reached, one command ran out of time,
or a command ran but did not do its work.

Kept apart from the connection modules so that the pure scheduler modules, which the
executor imports, can raise them too.
"""

from __future__ import annotations


class RemoteUnavailable(ConnectionError):
    """The compute resource cannot be reached now; try again later."""


class CommandTimedOut(TimeoutError):
    """One remote command did not finish in time; the connection itself is fine."""


class RemoteCommandFailed(RuntimeError):
    """A remote housekeeping command failed; the message has its stderr."""


class StatusUnavailable(RemoteCommandFailed):
    """The scheduler's status could not be read (its queue command failed, timed out or
    printed what cannot be read, or the output was cut short): nothing may be concluded
    about any job from this poll. The message has the scheduler's own words."""
