"""Domain errors: every failure a client can cause or meet, as one tree.

::

    JobdError                      (base; never raised itself)
    ├── InvalidArgument            the request is malformed (empty argv, NUL byte, bad grace)
    ├── NotFound                   no such job - or one the caller may not see
    ├── PermissionDenied           the caller's identity may not do this at all
    ├── FailedPrecondition         the system is not in a state to do it
    │   └── SpawnFailed            the command cannot be executed (missing, not executable)
    ├── ResourceExhausted          a quota or bound was reached
    ├── Unavailable                the daemon is shutting down
    └── DataLoss                   a job's stored output is damaged (truncated, missing)

The service maps each class to one gRPC status in one table (``jobd.api.service.STATUS_OF``);
anything that is not a ``JobdError`` is a bug and is logged with its traceback.
"""

from __future__ import annotations


class JobdError(Exception):
    """Base of every expected failure; the message is shown to the client as is."""


class InvalidArgument(JobdError):
    pass


class NotFound(JobdError):
    pass


class PermissionDenied(JobdError):
    pass


class FailedPrecondition(JobdError):
    pass


class SpawnFailed(FailedPrecondition):
    pass


class ResourceExhausted(JobdError):
    pass


class Unavailable(JobdError):
    pass


class IllegalTransition(Exception):
    """A job state change the state machine forbids: a bug, never a client's doing."""


class DataLoss(JobdError):
    pass
