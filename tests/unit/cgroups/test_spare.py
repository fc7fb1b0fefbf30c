"""The job cgroup made ahead of time (jobd.cgroups.spare), against the fake backend."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio
import trio.testing
from fake_cgroups import FakeBackend

from jobd.cgroups.spare import SpareGroup
from jobd.model.errors import FailedPrecondition
from jobd.model.resources import Limits

DEFAULT = Limits(pids=4096)


async def refill(spares: SpareGroup, limits: Limits) -> None:
    """What the manager does after a start, waiting for the spare."""
    if spares.after_start(limits):
        await spares.fill()


@pytest.fixture
def backend(tmp_path: Path) -> FakeBackend:
    return FakeBackend(tmp_path)


async def test_the_next_job_with_the_same_limits_gets_the_spare(backend: FakeBackend) -> None:
    spares = SpareGroup(backend)
    await refill(spares, DEFAULT)
    assert len(backend.groups) == 1
    job_id = spares.next_id(DEFAULT)
    assert f"job-{job_id}" in backend.groups
    group = spares.take(job_id, DEFAULT)
    assert group is backend.groups[f"job-{job_id}"]
    assert len(backend.groups) == 1  # nothing made on the way
    # Taken: the next job gets a new id and a new group.
    other = spares.next_id(DEFAULT)
    assert other != job_id
    assert spares.take(other, DEFAULT).name == f"job-{other}"


async def test_a_job_with_other_limits_makes_its_own_group(backend: FakeBackend) -> None:
    spares = SpareGroup(backend)
    await refill(spares, DEFAULT)
    (spare_name,) = backend.groups
    other = Limits(pids=10)
    job_id = spares.next_id(other)
    assert f"job-{job_id}" != spare_name
    assert spares.take(job_id, other).limits == other
    assert not backend.groups[spare_name].removed  # still there for the next default job
    assert f"job-{spares.next_id(DEFAULT)}" == spare_name


async def test_one_spare_at_a_time(backend: FakeBackend) -> None:
    spares = SpareGroup(backend)
    await refill(spares, DEFAULT)
    await refill(spares, DEFAULT)
    await refill(spares, Limits(pids=10))
    assert len(backend.groups) == 1


async def test_close_removes_the_spare_and_makes_no_more(backend: FakeBackend) -> None:
    spares = SpareGroup(backend)
    await refill(spares, DEFAULT)
    (group,) = backend.groups.values()
    spares.close()
    assert group.removed
    await refill(spares, DEFAULT)
    assert len(backend.groups) == 1
    uuid.UUID(spares.next_id(DEFAULT))  # a fresh id, no spare


async def test_a_failed_refill_leaves_no_spare_and_the_start_reports_the_error(
    backend: FakeBackend,
) -> None:
    spares = SpareGroup(backend)
    backend.fail_create = FailedPrecondition("no room")
    await refill(spares, DEFAULT)  # quietly nothing
    assert backend.groups == {}
    job_id = spares.next_id(DEFAULT)
    with pytest.raises(FailedPrecondition, match="no room"):
        spares.take(job_id, DEFAULT)


async def test_a_backend_without_procs_files_keeps_no_spare(tmp_path: Path) -> None:
    backend = FakeBackend(None)  # groups without cgroup.procs: nothing to join
    spares = SpareGroup(backend)
    await refill(spares, DEFAULT)
    (group,) = backend.groups.values()
    assert group.removed
    assert f"job-{spares.next_id(DEFAULT)}" != group.name


async def test_the_spare_is_made_right_after_the_start_with_the_latest_limits(
    backend: FakeBackend, mock_clock: trio.testing.MockClock
) -> None:
    spares = SpareGroup(backend)
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:
        assert spares.after_start(DEFAULT)
        nursery.start_soon(spares.fill)
        # Starts before the task runs only note their limits: one spare is on the way.
        assert not spares.after_start(Limits(pids=10))
        assert backend.groups == {}
        await trio.testing.wait_all_tasks_blocked()  # no waiting for a pause: the clock stands
        assert trio.current_time() == begin
        (group,) = backend.groups.values()
    assert group.limits == Limits(pids=10)
    assert f"job-{spares.next_id(Limits(pids=10))}" == group.name
