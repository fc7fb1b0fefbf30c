"""The real backends, as root: limits written, kill, OOM, leftovers, the fallbacks.

The tests make their groups under a parent named ``jobd-test-<random>`` and remove it (and
every process in it) on the way out, pass or fail."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from rootcgroups import (
    FAIL_AFTER,
    alive,
    control,
    members,
    needs,
    read_line,
    read_text,
    requires_cgroups,
    spawn_in,
    write_synced,
)

from jobd.cgroups import (
    CgroupBackend,
    Limits,
    block_device,
    detect,
    inotify,
)
from jobd.cgroups.files import read_keyed, write_value
from jobd.cgroups.mounts import parse_proc_cgroup
from jobd.cgroups.tree import freeze_and_kill
from jobd.cgroups.v1 import V1Backend, V1Cgroup
from jobd.cgroups.v2 import V2Backend
from jobd.model.errors import FailedPrecondition

MiB = 1 << 20


@requires_cgroups
@needs("cpu", "memory", "io", "pids")
async def test_process_is_in_every_hierarchy_and_limits_are_written(
    backend: CgroupBackend, children: list[trio.Process], tmp_path: Path
) -> None:
    device = block_device(tmp_path)
    limits = Limits(
        cpu=0.5, memory=100 * MiB, pids=20, io_read_bps=10 * MiB, io_write_bps=5 * MiB,
        io_device=device,
    )  # fmt: skip
    start = time.perf_counter()
    group = backend.create("job-where", limits)
    created = time.perf_counter() - start
    proc = await spawn_in(group, "exec sleep 300", children)

    own_lines = parse_proc_cgroup(read_text(f"/proc/{proc.pid}/cgroup"))
    used = [m for m in own_lines if m.hierarchy_id == 0 or m.controllers & {"cpu", "memory"}]
    assert used
    # The freezer only kills where there is no cgroup.kill (then it is needed).
    kills = [f for f in group.procs_files if (f.parent / "cgroup.kill").exists()]
    needed = {"cpu", "memory", "blkio", "pids"} | (set() if kills else {"freezer"})
    if not (isinstance(group, V1Cgroup) and "unified" in group.dirs):
        needed.add("cpuacct")  # else the unified group's cpu.stat counts the CPU time
    for member in own_lines:
        in_group = member.path.endswith(f"/{group.name}")
        wanted = member.hierarchy_id == 0 or bool(member.controllers & needed)
        assert in_group == wanted, member
    assert members(group) == {proc.pid}

    major, minor = device
    if backend.name == "v2":
        assert control(group, "cpu.max") == "50000 100000"
        assert control(group, "memory.max") == str(100 * MiB)
        assert control(group, "memory.oom.group") == "1"
        assert control(group, "io.max").startswith(
            f"{major}:{minor} rbps={10 * MiB} wbps={5 * MiB}"
        )
    else:
        assert control(group, "cpu.cfs_quota_us") == "50000"
        assert control(group, "cpu.cfs_period_us") == "100000"
        assert control(group, "memory.limit_in_bytes") == str(100 * MiB)
        read_bps = control(group, "blkio.throttle.read_bps_device")
        assert read_bps == f"{major}:{minor} {10 * MiB}"
        write_bps = control(group, "blkio.throttle.write_bps_device")
        assert write_bps == f"{major}:{minor} {5 * MiB}"
    assert control(group, "pids.max") == "20"
    print(f"create with 5 limits: {created * 1e3:.2f} ms")


@requires_cgroups
@needs("kill")
async def test_kill_takes_the_whole_tree_and_remove_leaves_nothing(
    backend: CgroupBackend, children: list[trio.Process], parent_name: str
) -> None:
    group = backend.create("job-tree", Limits())
    proc = await spawn_in(group, "setsid sleep 300 & sleep 300 & echo started; wait", children)
    assert await read_line(proc) == b"started"
    pids = members(group)
    assert len(pids) == 3, pids  # the shell, the setsid sleep and the plain sleep

    group.kill()
    with trio.fail_after(FAIL_AFTER):
        await group.wait_empty()
        await proc.wait()
    assert proc.returncode == -9
    assert not [pid for pid in pids if alive(pid)]
    assert members(group) == set()

    start = time.perf_counter()
    group.remove()
    removed = time.perf_counter() - start
    group.remove()  # idempotent
    assert not any(f.parent.exists() for f in group.procs_files)
    assert backend.leftovers() == []
    print(f"remove: {removed * 1e3:.2f} ms")


@requires_cgroups
async def test_wait_empty_when_the_job_exits_by_itself(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    group = backend.create("job-exits", Limits())
    await group.wait_empty()  # never populated: returns at once
    proc = await spawn_in(group, "sleep 0.3 & exit 0", children)
    with trio.fail_after(FAIL_AFTER):
        await proc.wait()
        await group.wait_empty()  # after the orphaned sleep, too
    group.remove()


@requires_cgroups
async def test_remove_refuses_a_group_with_processes(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    group = backend.create("job-busy", Limits())
    await spawn_in(group, "exec sleep 300", children)
    with pytest.raises(OSError, match="still has processes"):
        group.remove()


@requires_cgroups
@needs("memory", "kill")
async def test_memory_limit_oom_kills_and_is_reported(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    group = backend.create("job-oom", Limits(memory=100 * MiB))
    oom = trio.Event()

    async def watch_oom() -> None:
        await group.wait_oom()
        oom.set()

    allocate = f"{sys.executable} -c 'b = b\"x\" * (500 << 20); print(len(b))'"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_oom)
        await trio.testing.wait_all_tasks_blocked()
        # A bystander the v1 OOM killer leaves alone; the caller kills it on wait_oom().
        proc = await spawn_in(group, f"sleep 300 >&- & exec {allocate}", children)
        with trio.fail_after(FAIL_AFTER):
            await oom.wait()
            await proc.wait()
        assert proc.returncode == -9  # the allocating process, killed by the kernel
        assert len(members(group)) == 1 or backend.name == "v2"  # v2: memory.oom.group
        group.kill()
        with trio.fail_after(FAIL_AFTER):
            await group.wait_empty()
    usage = group.usage()
    assert usage.oom_kills >= 1, usage
    assert usage.memory_peak is not None
    assert usage.memory_peak <= 100 * MiB
    group.remove()
    assert group.usage() == usage  # still answers once removed


@requires_cgroups
@needs("pids")
async def test_pids_limit_contains_a_fork_loop(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    group = backend.create("job-forks", Limits(pids=20))
    loop = "i=0; while [ $i -lt 100 ]; do sleep 300 >&- & i=$((i+1)); done; echo looped; wait"
    proc = await spawn_in(group, loop, children, stderr=subprocess.DEVNULL)
    # "looped", or end of file if the shell gave up at a failed fork: the loop is over.
    await read_line(proc)
    count = len(members(group))
    assert 0 < count <= 20
    assert group.usage().pids_limit_hits > 0


@requires_cgroups
@needs("cpu")
async def test_cpu_limit_holds_a_busy_loop(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    group = backend.create("job-cpu", Limits(cpu=0.2))
    loop = "import time\nend = time.time() + 2\nwhile time.time() < end: pass"
    busy = f"exec {sys.executable} -c '{loop}'"
    start = time.monotonic()
    proc = await spawn_in(group, busy, children)
    with trio.fail_after(FAIL_AFTER):
        await proc.wait()
    wall = time.monotonic() - start
    cpu = group.usage().cpu_seconds
    assert cpu is not None
    assert 0.1 <= cpu / wall <= 0.3, (cpu, wall)
    group.remove()


@requires_cgroups
@needs("io")
async def test_read_bandwidth_limit_slows_direct_reads(
    backend: CgroupBackend, children: list[trio.Process], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_synced(data, os.urandom(4 * MiB))
    limits = Limits(io_read_bps=4 * MiB, io_device=block_device(tmp_path))
    group = backend.create("job-io", limits)
    read = f"exec dd if={data} of=/dev/null bs=1M iflag=direct status=none"
    start = time.monotonic()
    proc = await spawn_in(group, read, children)
    with trio.fail_after(FAIL_AFTER):
        await proc.wait()
    elapsed = time.monotonic() - start
    assert proc.returncode == 0
    # Unthrottled this takes milliseconds; 4 MiB at 4 MiB/s takes about a second.
    assert elapsed >= 0.5, elapsed
    group.remove()


@requires_cgroups
@needs("kill")
async def test_leftover_from_a_dead_daemon_is_found_killed_and_removed(
    backend: CgroupBackend, children: list[trio.Process], parent_name: str
) -> None:
    lost = backend.create("job-lost", Limits())
    proc = await spawn_in(lost, "setsid sleep 300 & echo started; exec sleep 300", children)
    assert await read_line(proc) == b"started"
    pids, procs_files = members(lost), lost.procs_files
    assert len(pids) == 2
    del lost  # the first daemon "dies" without cleaning up

    # A new daemon of the same kind, which knows nothing of the first one's groups.
    successor: CgroupBackend = (
        V2Backend(parent_name, backend.hierarchy, [])
        if isinstance(backend, V2Backend)
        else detect(parent_name)
    )
    (found,) = successor.leftovers()
    assert found.name == "job-lost"
    assert sorted(found.procs_files) == sorted(procs_files)
    assert members(found) == pids
    found.kill()
    with trio.fail_after(FAIL_AFTER):
        await found.wait_empty()
        await proc.wait()
    assert not [pid for pid in pids if alive(pid)]
    found.remove()
    assert successor.leftovers() == []


@requires_cgroups
@needs("io")
async def test_create_refuses_an_unknown_device(backend: CgroupBackend) -> None:
    with pytest.raises(FailedPrecondition, match="cannot"):
        backend.create("job-baddev", Limits(io_read_bps=MiB, io_device=(4095, 4095)))
    assert backend.leftovers() == []


@requires_cgroups
async def test_describe_names_every_controller(backend: CgroupBackend) -> None:
    text = backend.describe()
    for controller in ("cpu", "memory", "io", "pids", "kill", "freeze"):
        assert f"  {controller} " in text
    print(text)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@requires_cgroups
async def test_waits_close_their_descriptors(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    memory = Limits(memory=100 * MiB) if "memory" in backend.controllers else Limits()
    group = backend.create("job-fds", memory)
    inotify._hub()  # this run's shared inotify reader: started once, it stays
    before = open_fds()
    proc = await spawn_in(group, "exec sleep 300", children)
    with trio.move_on_after(0.05):
        await group.wait_oom()  # cancelled while waiting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.wait_empty)
        await trio.testing.wait_all_tasks_blocked()
        group.kill()
    await proc.wait()
    assert proc.stdout is not None
    await proc.stdout.aclose()
    assert open_fds() == before
    group.remove()


@requires_cgroups
@needs(backend="v1")
async def test_v1_groups_only_in_the_hierarchies_a_job_needs(
    backend: CgroupBackend, tmp_path: Path
) -> None:
    """No blkio group without an I/O limit, no freezer group where cgroup.kill kills."""
    assert isinstance(backend, V1Backend)
    plain = backend.create("job-lean", Limits(pids=10))
    io = backend.create("job-io-lean", Limits(io_read_bps=MiB, io_device=block_device(tmp_path)))
    try:
        assert isinstance(plain, V1Cgroup) and isinstance(io, V1Cgroup)
        for key in ("cpu", "memory", "pids"):
            assert key in plain.dirs
        # CPU time from the unified group where there is one, else from cpuacct.
        assert ("cpuacct" in plain.dirs) is ("unified" not in plain.dirs) or (
            plain.dirs.get("cpuacct") == plain.dirs.get("cpu")
        )
        assert "blkio" not in plain.dirs and "blkio" in io.dirs
        has_kill = "unified" in plain.dirs and (plain.dirs["unified"] / "cgroup.kill").exists()
        assert ("freezer" in plain.dirs) is (not has_kill)
        made = {d for d in backend.parents.values() if (d / "job-lean").is_dir()}
        assert made == {p.parent for p in plain.dirs.values()}
    finally:
        plain.remove()
        io.remove()


@requires_cgroups
@needs(backend="v1")
async def test_v1_freezer_and_bare_fallbacks(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    """Without the unified hierarchy: kill by freezing (or by repeated rounds without a
    freezer), and emptiness by polling."""
    assert isinstance(backend, V1Backend)
    for drop in ({"unified"}, {"unified", "freezer"}):
        group = backend.create(f"job-fallback-{len(drop)}", Limits(), every_hierarchy=True)
        proc = await spawn_in(group, "setsid sleep 300 & sleep 300 & echo started; wait", children)
        assert await read_line(proc) == b"started"
        pids = members(group)
        assert isinstance(group, V1Cgroup)
        bare = V1Cgroup(group.name, {k: v for k, v in group.dirs.items() if k not in drop})
        bare.kill()
        with trio.fail_after(FAIL_AFTER):
            await bare.wait_empty()
            await proc.wait()
        assert not [pid for pid in pids if alive(pid)]
        assert members(group) == set()
        if "freezer" in group.dirs:
            assert control(group, "freezer.state") == "THAWED"
        group.remove()


@requires_cgroups
@needs("freeze")
async def test_cgroup2_freeze_fallback(
    backend: CgroupBackend, children: list[trio.Process]
) -> None:
    """The recipe for kernels before cgroup.kill (5.14), on a cgroup2 directory."""
    group = backend.create("job-freeze", Limits())
    cgroup2 = next(f.parent for f in group.procs_files if (f.parent / "cgroup.freeze").exists())
    proc = await spawn_in(group, "setsid sleep 300 & sleep 300 & echo started; wait", children)
    assert await read_line(proc) == b"started"
    pids = members(group)
    freeze_and_kill(
        freeze=lambda: write_value(cgroup2 / "cgroup.freeze", 1),
        is_frozen=lambda: read_keyed(cgroup2 / "cgroup.events").get("frozen") == 1,
        thaw=lambda: write_value(cgroup2 / "cgroup.freeze", 0),
        procs_files=[cgroup2 / "cgroup.procs"],
    )
    with trio.fail_after(FAIL_AFTER):
        await group.wait_empty()
        await proc.wait()
    assert not [pid for pid in pids if alive(pid)]
    group.remove()


@requires_cgroups
async def test_create_refuses_an_existing_name_and_leaves_it_alone(
    backend: CgroupBackend,
) -> None:
    first = backend.create("job-same", Limits())
    with pytest.raises(FailedPrecondition, match="File exists"):
        backend.create("job-same", Limits())
    assert all(f.parent.is_dir() for f in first.procs_files)
    first.remove()


