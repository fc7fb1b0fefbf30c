"""Identity slices under the parent, and the ceilings on both, with real backends as root."""

from __future__ import annotations

import trio
import trio.testing
from rootcgroups import (
    members,
    needs,
    own_hierarchies,
    read_line,
    read_text,
    requires_cgroups,
    spawn_in,
)

from jobd.cgroups import CgroupBackend, Limits
from jobd.cgroups.base import check_group_name, identity_slice
from jobd.model.resources import Ceiling

MiB = 1 << 20


def test_identity_slices_are_plain_names_or_digests_that_cannot_collide() -> None:
    assert identity_slice("client_1") == "u-client_1"
    assert identity_slice("alice.example-2") == "u-alice.example-2"
    odd = [identity_slice(name) for name in ("../etc", "a b", "", "x" * 65, "é", "h-abc")]
    assert all(s.startswith("h-") and len(s) == 34 for s in odd[:5]), odd
    assert odd[5] == "u-h-abc"  # a plain name stays plain: "u-" never meets "h-"
    assert len(set(odd)) == len(odd)
    for name in odd:
        check_group_name(name)  # a directory name like any other group's


@requires_cgroups
async def test_job_groups_live_in_their_slices_under_the_ceilings(
    backend: CgroupBackend, parent_name: str, children: list[trio.Process]
) -> None:
    problems = backend.configure(Ceiling(memory=512 * MiB, pids=300, cpu_weight=10),
                                 Ceiling(memory=256 * MiB, pids=100))  # fmt: skip
    assert problems == []
    group = backend.create("job-sliced", Limits(), identity_slice("alice"))
    proc = await spawn_in(group, "echo started; exec sleep 300", children)
    assert await read_line(proc) == b"started"
    membership = read_text(f"/proc/{proc.pid}/cgroup")
    assert f"/{parent_name}/u-alice/job-sliced\n" in membership
    checked = set()
    for hierarchy in own_hierarchies():
        where = hierarchy.current / parent_name
        for name, parent, each in (("memory.max", 512 * MiB, 256 * MiB),
                                   ("memory.limit_in_bytes", 512 * MiB, 256 * MiB),
                                   ("pids.max", 300, 100),
                                   # all jobs weigh less than jobd; slices, evenly
                                   ("cpu.shares", 102, 1024),
                                   ("cpu.weight", 10, 100)):  # fmt: skip
            if (where / name).exists():
                assert int(read_text(str(where / name))) == parent
                assert int(read_text(str(where / "u-alice" / name))) == each
                checked.add(name)
    assert checked >= {name for name, controller in (("memory.limit_in_bytes", "memory"),
                                                     ("pids.max", "pids"),
                                                     ("cpu.shares", "cpu"))
                       if controller in backend.controllers and backend.name == "v1"}
    # A change of ceilings reaches the slices that exist, and the parent's weight goes back
    # to the kernel's default with it.
    assert backend.configure(Ceiling(), Ceiling(pids=50)) == []
    for hierarchy in own_hierarchies():
        pids_max = hierarchy.current / parent_name / "u-alice" / "pids.max"
        if pids_max.exists():
            assert read_text(str(pids_max)).strip() == "50"
        for name, default in (("cpu.shares", "1024"), ("cpu.weight", "100")):
            if (hierarchy.current / parent_name / name).exists():
                assert read_text(str(hierarchy.current / parent_name / name)).strip() == default
    # A dead daemon's job group is found in its slice, and the slice goes with the parent.
    (found,) = backend.leftovers()
    assert found.name == "job-sliced" and members(found) == {proc.pid}


@requires_cgroups
@needs("pids")
async def test_a_slice_holds_its_ceiling_over_all_its_jobs(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    backend.configure(Ceiling(), Ceiling(pids=8))
    fork = "for i in 1 2 3 4 5 6; do sleep 300 & done 2>/dev/null; echo forked; wait"
    started = []
    for name in ("job-one", "job-two"):
        group = backend.create(name, Limits(pids=100), identity_slice("bob"))  # each below 100
        proc = await spawn_in(group, fork, children)
        started.append((group, proc))
    total = sum(len(members(group)) for group, _ in started)
    assert total <= 8
