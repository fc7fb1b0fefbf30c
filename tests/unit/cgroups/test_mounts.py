"""Finding the cgroup hierarchies: /proc/self/mountinfo and /proc/self/cgroup, parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobd.cgroups.mounts import (
    Hierarchy,
    find_hierarchies,
    parse_mountinfo,
    parse_proc_cgroup,
    relative_to_root,
)

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


