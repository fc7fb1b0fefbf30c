"""The none backend (no cgroups) and the fake one the unit tests use."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from fake_cgroups import FakeBackend

from jobd.cgroups import Limits, NoneBackend, Usage
from jobd.model.errors import FailedPrecondition

MiB = 1 << 20




async def test_none_backend_runs_unlimited_and_refuses_limits() -> None:
    backend = NoneBackend("not running as root")
    group = backend.create("job-1", Limits())
    assert group.procs_files == []
    assert group.usage() == Usage()
    group.kill()
    await group.wait_empty()
    group.remove()
    with pytest.raises(FailedPrecondition, match=r"memory.*not running as root"):
        backend.create("job-2", Limits(memory=MiB))


async def test_fake_backend(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path, frozenset({"memory", "kill"}))
    with pytest.raises(FailedPrecondition, match="'pids'"):
        backend.create("job-0", Limits(pids=5))
    group = backend.create("job-1", Limits(memory=MiB))
    assert group.procs_files == [tmp_path / "job-1" / "cgroup.procs"]
    assert group.procs_files[0].exists()
    assert backend.groups["job-1"].limits.memory == MiB

    group.populate()
    with pytest.raises(OSError, match="still has processes"):
        group.remove()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.wait_oom)
        nursery.start_soon(group.wait_empty)
        await trio.testing.wait_all_tasks_blocked()
        group.trigger_oom()
        group.kill()
    assert group.kills == 1
    assert group.usage().oom_kills == 1
    group.remove()
    assert group.removed

    left = backend.add_leftover("old-job")
    assert backend.leftovers() == [left]
    left.kill()
    left.remove()
    assert backend.leftovers() == []
    backend.remove_parent()
    assert backend.parent_removed


