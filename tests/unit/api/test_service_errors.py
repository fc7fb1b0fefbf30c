"""The one error mapping: every domain error becomes exactly one gRPC status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from grpclib import Status

import jobd
from jobd.api.service import STATUS_OF, status_of
from jobd.model import errors


def defined_in_errors() -> list[type[errors.JobdError]]:
    """Every JobdError subclass defined in jobd.model.errors, found by walking the module."""
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.JobdError)
        and cls is not errors.JobdError
        and cls.__module__ == errors.__name__
    ]


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    sub: type
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_errors_module_has_the_documented_tree() -> None:
    names = {cls.__name__ for cls in defined_in_errors()}
    assert names >= {
        "InvalidArgument", "NotFound", "PermissionDenied", "FailedPrecondition",
        "SpawnFailed", "ResourceExhausted", "Unavailable", "DataLoss",
    }  # fmt: skip
    # IllegalTransition is a bug, not a domain error: it must never reach a client as one.
    assert not issubclass(errors.IllegalTransition, errors.JobdError)


@pytest.mark.parametrize("cls", defined_in_errors(), ids=lambda c: c.__name__)
def test_every_error_in_errors_module_has_its_own_entry(cls: type[errors.JobdError]) -> None:
    assert cls in STATUS_OF
    status = status_of(cls("message"))
    assert isinstance(status, Status)
    assert status is STATUS_OF[cls]
    assert status not in (Status.OK, Status.UNKNOWN, Status.INTERNAL)


def test_every_subclass_anywhere_in_jobd_maps() -> None:
    # Import every jobd module, so that errors defined elsewhere (CorruptLog) are found too.
    for info in pkgutil.walk_packages(jobd.__path__, "jobd."):
        if info.name != "jobd.__main__":
            importlib.import_module(info.name)
    subclasses = all_subclasses(errors.JobdError)
    assert set(defined_in_errors()) <= subclasses
    for cls in subclasses:
        assert isinstance(status_of(cls("message")), Status), cls


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (errors.InvalidArgument, Status.INVALID_ARGUMENT),
        (errors.NotFound, Status.NOT_FOUND),
        (errors.PermissionDenied, Status.PERMISSION_DENIED),
        (errors.FailedPrecondition, Status.FAILED_PRECONDITION),
        (errors.SpawnFailed, Status.FAILED_PRECONDITION),
        (errors.ResourceExhausted, Status.RESOURCE_EXHAUSTED),
        (errors.Unavailable, Status.UNAVAILABLE),
        (errors.DataLoss, Status.DATA_LOSS),
    ],
)
def test_status_of(cls: type[errors.JobdError], status: Status) -> None:
    assert status_of(cls("x")) is status


def test_corrupt_log_is_data_loss() -> None:
    from jobd.jobs.output import CorruptLog

    assert status_of(CorruptLog("truncated")) is Status.DATA_LOSS


def test_a_new_subclass_maps_through_its_parent() -> None:
    class JobGone(errors.NotFound):
        pass

    assert status_of(JobGone("x")) is Status.NOT_FOUND


def test_the_base_class_has_no_status() -> None:
    # JobdError is never raised itself; if it were, that is a bug, not a client's error.
    with pytest.raises(AssertionError, match="no gRPC status for JobdError"):
        status_of(errors.JobdError("x"))
