"""Choosing a backend from what this host mounts, and the daemon's own group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobd.cgroups import detect
from jobd.cgroups.mounts import Hierarchy
from jobd.cgroups.v2 import V2Backend


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


