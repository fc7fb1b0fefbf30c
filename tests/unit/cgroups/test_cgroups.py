"""jobd.cgroups: parsing and the fake without privileges; the real backends as root.

The real tests make their groups under a parent named ``jobd-test-<random>`` and remove it
(and every process in it) on the way out, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from jobd.cgroups import (
    CgroupBackend,
    FakeBackend,
    JobCgroup,
    Limits,
    NoneBackend,
    Usage,
    block_device,
    detect,
    format_size,
    inotify,
    parse_cpu,
    parse_size,
)
from jobd.cgroups.base import check_group_name, identity_slice
from jobd.cgroups.files import read_keyed, write_value
from jobd.cgroups.inotify import wait_until
from jobd.cgroups.mounts import (
    Hierarchy,
    find_hierarchies,
    parse_mountinfo,
    parse_proc_cgroup,
    relative_to_root,
)
from jobd.cgroups.tree import freeze_and_kill
from jobd.cgroups.v1 import V1Backend, V1Cgroup
from jobd.cgroups.v2 import V2Backend
from jobd.model.errors import FailedPrecondition
from jobd.model.resources import Ceiling

MiB = 1 << 20
F = TypeVar("F", bound=Callable[..., object])

# --------------------------------------------------------------------------- sample texts

# This machine: v1 controllers each on their own, a controller-less cgroup2, and the memory
# controller's group nested somewhere below the root.
MOUNTINFO_V1_SPLIT = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
CGROUP_V1_SPLIT = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/95b4
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

# systemd hybrid: cpu and cpuacct share one hierarchy, optional fields before the dash.
MOUNTINFO_V1_COMBINED = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw shared:16 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/blkio rw shared:17 - cgroup cgroup rw,blkio
34 25 0:31 / /sys/fs/cgroup/freezer rw shared:18 - cgroup cgroup rw,freezer
35 25 0:32 / /sys/fs/cgroup/net_cls,net_prio rw shared:19 - cgroup cgroup rw,net_cls,net_prio
"""
CGROUP_V1_COMBINED = """\
12:freezer:/
11:blkio:/system.slice/jobd.service
10:pids:/system.slice/jobd.service
9:memory:/system.slice/jobd.service
4:cpu,cpuacct:/system.slice/jobd.service
3:net_cls,net_prio:/
1:name=systemd:/system.slice/jobd.service
0::/system.slice/jobd.service
"""

MOUNTINFO_V2 = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
CGROUP_V2 = "0::/system.slice/jobd.service\n"

# A container without a cgroup namespace: the mount shows only the container's subtree,
# and a mount point with a space in it is escaped.
MOUNTINFO_CONTAINER = (
    "800 700 0:30 /docker/abc /sys/fs/cgroup\\040x ro,nosuid - cgroup2 cgroup2 rw\n"
)
CGROUP_CONTAINER = "0::/docker/abc/inner\n"


# --------------------------------------------------------------------------- parsing


def test_mountinfo_v1_split() -> None:
    mounts = {m.mount_point.name: m for m in parse_mountinfo(MOUNTINFO_V1_SPLIT)}
    assert set(mounts) == {
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
        "systemd", "unified",
    }  # fmt: skip
    assert mounts["cpu"].fstype == "cgroup"
    assert "cpu" in mounts["cpu"].options
    assert mounts["unified"].fstype == "cgroup2"


def test_proc_cgroup_lines() -> None:
    members = parse_proc_cgroup(CGROUP_V1_COMBINED)
    assert members[4].controllers == {"cpu", "cpuacct"}
    assert members[4].path == "/system.slice/jobd.service"
    assert members[-1].hierarchy_id == 0
    assert members[-1].controllers == frozenset()


def by_label(hierarchies: list[Hierarchy]) -> dict[str, Hierarchy]:
    return {h.label: h for h in hierarchies}


def test_hierarchies_v1_split_with_nested_memory_group() -> None:
    found, notes = find_hierarchies(MOUNTINFO_V1_SPLIT, CGROUP_V1_SPLIT)
    hierarchies = by_label(found)
    # cpuset, devices and name=systemd are not ours to use
    assert set(hierarchies) == {"cpu", "cpuacct", "memory", "freezer", "blkio", "pids", "unified"}
    assert hierarchies["memory"].current == Path("/sys/fs/cgroup/memory/process_api/95b4")
    assert hierarchies["cpu"].current == Path("/sys/fs/cgroup/cpu")
    assert hierarchies["unified"].version == 2
    assert notes == []


def test_hierarchies_v1_combined_cpu_cpuacct() -> None:
    found, _ = find_hierarchies(MOUNTINFO_V1_COMBINED, CGROUP_V1_COMBINED)
    hierarchies = by_label(found)
    assert set(hierarchies) == {"cpu,cpuacct", "memory", "pids", "blkio", "freezer", "unified"}
    assert hierarchies["cpu,cpuacct"].current == Path(
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/jobd.service"
    )
    assert hierarchies["unified"].current == Path(
        "/sys/fs/cgroup/unified/system.slice/jobd.service"
    )
    assert hierarchies["freezer"].current == Path("/sys/fs/cgroup/freezer")


def test_hierarchies_pure_v2() -> None:
    found, notes = find_hierarchies(MOUNTINFO_V2, CGROUP_V2)
    assert len(found) == 1
    assert found[0].version == 2
    assert found[0].current == Path("/sys/fs/cgroup/system.slice/jobd.service")
    assert notes == []


def test_hierarchies_mount_root_is_a_subtree() -> None:
    found, _ = find_hierarchies(MOUNTINFO_CONTAINER, CGROUP_CONTAINER)
    assert [h.current for h in found] == [Path("/sys/fs/cgroup x/inner")]


def test_hierarchy_outside_the_mounted_subtree_is_noted() -> None:
    found, notes = find_hierarchies(MOUNTINFO_CONTAINER, "0::/elsewhere\n")
    assert found == []
    assert "outside the mounted subtree /docker/abc" in notes[0]


def test_v1_controller_not_mounted_is_noted() -> None:
    found, notes = find_hierarchies(MOUNTINFO_V2, "4:memory:/\n0::/\n")
    assert [h.version for h in found] == [2]
    assert notes == ["memory: in /proc/self/cgroup but not mounted"]


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/a/b", "/", "a/b"),
        ("/a/b", "/a", "b"),
        ("/a", "/a", ""),
        ("/", "/", ""),
        ("/ab", "/a", None),
        ("/../x", "/", None),
    ],
)
def test_relative_to_root(path: str, root: str, expected: str | None) -> None:
    assert relative_to_root(path, root) == expected


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("512K", 512 << 10),
        ("256M", 256 << 20),
        ("256m", 256 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("1.5G", 3 << 29),
        ("2T", 2 << 40),
        (" 10M ", 10 << 20),
        ("0", 0),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12X", "-1M", "1.5", "1e3", "10 MB extra", "0.1K"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "cores"), [("0.5", 0.5), ("2", 2.0), ("50%", 0.5), ("250m", 0.25)]
)
def test_parse_cpu(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize("text", ["", "0", "-1", "half", "nan", "inf", "0%"])
def test_parse_cpu_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid CPU limit"):
        parse_cpu(text)


def test_format_size() -> None:
    assert format_size(100 * MiB) == "100 MiB"
    assert format_size(3 << 29) == "1.5 GiB"
    assert format_size(512) == "512 B"


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="cpu"):
        Limits(cpu=0)
    with pytest.raises(ValueError, match="memory"):
        Limits(memory=-1)
    with pytest.raises(ValueError, match="io_device"):
        Limits(io_read_bps=10 * MiB)
    limits = Limits(cpu=0.5, pids=3, io_write_bps=1, io_device=(8, 0))
    assert limits.requested() == ["cpu", "io_write_bps", "pids"]
    assert limits.controllers() == ["cpu", "io", "pids"]


def test_block_device_maps_a_partition_to_its_disk(tmp_path: Path) -> None:
    # A fake /sys/dev/block in which the file system under tmp_path sits on partition 1
    # of a disk numbered 8:0.
    st = os.stat(tmp_path)
    disk = tmp_path / "sys" / "block" / "sda"
    (disk / "sda1").mkdir(parents=True)
    (disk / "dev").write_text("8:0\n")
    (disk / "sda1" / "partition").write_text("1\n")
    dev_block = tmp_path / "dev-block"
    dev_block.mkdir()
    (dev_block / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}").symlink_to(disk / "sda1")
    assert block_device(tmp_path, dev_block) == (8, 0)


def test_block_device_refuses_a_non_block_filesystem() -> None:
    with pytest.raises(ValueError, match="not a block device"):
        block_device("/proc")


# --------------------------------------------------------------------------- none and fake


def test_detect_without_mounts_is_none(tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text("27 1 254:0 / / rw - ext4 /dev/vda rw\n")
    (tmp_path / "cgroup").write_text("0::/\n")
    backend = detect("jobd-test", proc_self=tmp_path)
    assert backend.name == "none"
    assert backend.controllers == frozenset()
    assert "no cgroup hierarchy is mounted" in backend.describe()


def test_detect_unreadable_proc_is_none(tmp_path: Path) -> None:
    backend = detect("jobd-test", proc_self=tmp_path / "missing")
    assert backend.name == "none"
    assert "cannot read" in backend.describe()


def test_detect_rejects_a_parent_name_with_a_slash() -> None:
    with pytest.raises(ValueError, match="invalid cgroup name"):
        detect("../x")


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


def inotify_instances() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += "inotify" in os.readlink(f"/proc/self/fd/{fd}")
    return count


async def test_wait_until_wakes_on_change_with_one_inotify_instance(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(3)]
    for f in files:
        f.write_text("0")
    woke: list[int] = []

    async def waiter(i: int) -> None:
        path = files[i % 3]
        await wait_until(path, lambda: path.read_text() == "1")
        woke.append(i)

    async with trio.open_nursery() as nursery:
        # More waiters than fs.inotify.max_user_instances (128) allows instances.
        for i in range(200):
            nursery.start_soon(waiter, i)
        await trio.testing.wait_all_tasks_blocked()
        assert inotify_instances() == 1
        assert woke == []
        files[0].write_text("2")  # a change that does not satisfy anyone
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        for f in files:
            f.write_text("1")
    assert sorted(woke) == list(range(200))
    async with trio.open_nursery() as nursery:  # watches were released and can be re-added
        nursery.start_soon(wait_until, files[0], lambda: files[0].read_text() == "3")
        await trio.testing.wait_all_tasks_blocked()
        files[0].write_text("3")
    assert inotify_instances() == 1


async def test_wait_until_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await wait_until(tmp_path / "missing", lambda: False)


async def test_wait_until_sets_no_watch_when_already_done(tmp_path: Path) -> None:
    await wait_until(tmp_path / "missing", lambda: True)  # a watch would need the file


def _fake_v2(tmp_path: Path, own: str, members: list[int]) -> Hierarchy:
    """A cgroup2 tree in plain files: the daemon's group ``own`` (holding ``members``), its
    would-be leaf and the job parent, each with the control files the backend touches."""
    mount = tmp_path / "cgroup"
    group = mount / own if own else mount
    for directory in (group, group / "daemon", group / "jobd"):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.controllers").write_text("cpu io memory pids\n")
        (directory / "cgroup.subtree_control").write_text("")
        (directory / "cgroup.procs").write_text("")
    (group / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in members))
    return Hierarchy(version=2, controllers=frozenset(), mount_point=mount, current=group)


@pytest.mark.parametrize(
    ("own", "others", "leave", "moved"),
    [
        ("system.slice/jobd.service", [], True, True),  # alone under Delegate=yes: step down
        ("system.slice/jobd.service", [1], True, False),  # not ours to move
        ("", [], True, False),  # the root group is exempt from the rule
        ("system.slice/jobd.service", [], False, False),  # only the daemon asks for it
    ],
)
def test_the_daemon_steps_into_a_leaf_only_when_alone_in_a_delegated_group(
    tmp_path: Path, own: str, others: list[int], leave: bool, moved: bool
) -> None:
    hierarchy = _fake_v2(tmp_path, own, [os.getpid(), *others])
    backend = V2Backend("jobd", hierarchy, [], leave_own_group=leave)
    leaf = hierarchy.current / "daemon"
    assert (leaf / "cgroup.procs").read_text() == (str(os.getpid()) if moved else "")
    assert backend.daemon_group == (leaf if moved else hierarchy.current)
    assert backend.parent == hierarchy.current / "jobd"  # the jobs are the daemon's siblings
    assert (f"daemon's group: {leaf}" in backend.describe()) == moved


# --------------------------------------------------------------------------- as root

requires_cgroups = pytest.mark.cgroups
FAIL_AFTER = 20.0


def _own_hierarchies() -> list[Hierarchy]:
    found, _ = find_hierarchies(read_text("/proc/self/mountinfo"), read_text("/proc/self/cgroup"))
    return found


def _backend_or_skip(parent: str, variant: str) -> CgroupBackend:
    if os.geteuid() != 0:
        pytest.skip("needs root and cgroups: not running as root")
    backend = detect(parent)
    if isinstance(backend, NoneBackend):
        pytest.skip(f"needs root and cgroups: {backend.reason}")
    if variant == "detected":
        return backend
    # The v2 backend on a v1 machine's controller-less cgroup2: no limits, but groups,
    # cgroup.kill, cgroup.events, cpu.stat and leftovers all work as on a v2 machine.
    backend.remove_parent()
    if backend.name == "v2":
        pytest.skip("needs a hybrid machine: the detected backend is v2 already")
    unified = [h for h in _own_hierarchies() if h.version == 2]
    if not unified:
        pytest.skip("needs root and cgroups: no cgroup2 hierarchy mounted")
    v2 = V2Backend(parent, unified[0], [])
    if v2.unusable_reason:
        pytest.skip(f"needs root and cgroups: {v2.unusable_reason}")
    return v2


def needs(*controllers: str, backend: str | None = None) -> Callable[[F], F]:
    """What a root test needs; checked by the sync ``real_backend`` fixture, because a skip
    raised inside an async test loses its reason under pytest-trio."""

    def mark(test: F) -> F:
        test.needs = (controllers, backend)  # type: ignore[attr-defined]
        return test

    return mark


def _skip_unless_has(backend: CgroupBackend, request: pytest.FixtureRequest) -> None:
    controllers, name = getattr(request.function, "needs", ((), None))
    if name is not None and backend.name != name:
        pytest.skip(f"needs the {name} backend; this one is {backend.name}")
    missing = [c for c in controllers if c not in backend.controllers]
    if missing:
        pytest.skip(f"needs root and cgroups: {missing} unavailable in the {backend.name} backend")


def _leftover_dirs(parent: str) -> list[str]:
    mounts = {h.mount_point for h in _own_hierarchies()}
    return [
        os.path.join(root, d)
        for mount in mounts
        for root, dirs, _ in os.walk(mount)
        for d in dirs
        if d == parent
    ]


@pytest.fixture
def parent_name() -> str:
    return f"jobd-test-{secrets.token_hex(4)}"


@pytest.fixture(params=["detected", "v2-on-unified"])
def real_backend(request: pytest.FixtureRequest, parent_name: str) -> CgroupBackend:
    # Skipping from a sync fixture keeps the reason; an async one loses it.
    backend = _backend_or_skip(parent_name, request.param)
    try:
        _skip_unless_has(backend, request)
    except pytest.skip.Exception:
        backend.remove_parent()
        raise
    return backend


@pytest.fixture
async def backend(real_backend: CgroupBackend, parent_name: str) -> AsyncIterator[CgroupBackend]:
    """The real backend; on the way out every group under the test parent is killed,
    waited for and removed, then the parent itself."""
    backend = real_backend
    try:
        yield backend
    finally:
        try:
            for group in backend.leftovers():
                group.kill()
                with trio.fail_after(FAIL_AFTER):
                    await group.wait_empty()
                group.remove()
        finally:
            backend.remove_parent()
    assert _leftover_dirs(parent_name) == []


@pytest.fixture
async def children() -> AsyncIterator[list[trio.Process]]:
    """Direct children of the test, killed and reaped whatever happens."""
    procs: list[trio.Process] = []
    try:
        yield procs
    finally:
        with trio.fail_after(FAIL_AFTER):
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()


# What the supervisor's shim does: join every group, then become the command.
SHIM = 'for f in "$@"; do echo $$ > "$f" || exit 126; done; echo joined; '


async def spawn_in(
    group: JobCgroup, script: str, children: list[trio.Process], **kwargs: object
) -> trio.Process:
    """Start ``script`` under /bin/sh inside ``group``; return once it has joined."""
    argv = ["/bin/sh", "-c", SHIM + script, "sh", *map(str, group.procs_files)]
    proc = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        **kwargs,  # type: ignore[arg-type]
    )
    children.append(proc)
    assert await read_line(proc) == b"joined"
    return proc


async def read_line(proc: trio.Process) -> bytes:
    assert proc.stdout is not None
    data = b""
    with trio.fail_after(FAIL_AFTER):
        while not data.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                break
            data += chunk
    return data.strip()


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


def members(group: JobCgroup) -> set[int]:
    return {int(pid) for f in group.procs_files for pid in f.read_text().split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def control(group: JobCgroup, file: str) -> str:
    """A control file's content, from whichever of the group's directories has it."""
    for procs in group.procs_files:
        if (procs.parent / file).exists():
            return (procs.parent / file).read_text().strip()
    raise AssertionError(f"no {file} in {group.procs_files}")


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


# --- slices and ceilings --------------------------------------------------------------------


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
    for hierarchy in _own_hierarchies():
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
    for hierarchy in _own_hierarchies():
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
