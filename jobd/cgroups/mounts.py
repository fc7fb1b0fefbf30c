"""Where the cgroup hierarchies are and where this process sits in each.

Only /proc/self/mountinfo and /proc/self/cgroup are consulted, never fixed paths: the
mount point, the mount's root (a container may see a subtree only) and our own group's
path are all read from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# The v1 controllers jobd uses; named hierarchies (name=systemd) and others are ignored.
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "memory", "blkio", "pids", "freezer"})


@dataclass(frozen=True)
class Mount:
    mount_point: Path
    root: str  # the directory of the hierarchy this mount shows
    fstype: str
    options: frozenset[str]  # super options: for cgroup v1 they name the controllers


@dataclass(frozen=True)
class Membership:
    """One line of /proc/self/cgroup."""

    hierarchy_id: int
    controllers: frozenset[str]  # empty for the cgroup2 line "0::/path"
    path: str


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: the controllers bound to it; v2: empty (read from files)
    mount_point: Path
    current: Path  # this process's own group, as a directory under the mount point

    @property
    def label(self) -> str:
        return "unified" if self.version == 2 else ",".join(sorted(self.controllers))


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as three-digit octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """cgroup and cgroup2 mounts; other lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")  # optional fields before it vary in number
        if len(fields) < dash + 4 or dash < 5:
            continue
        fstype = fields[dash + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            Mount(
                mount_point=Path(_unescape(fields[4])),
                root=_unescape(fields[3]),
                fstype=fstype,
                options=frozenset(fields[dash + 3].split(",")),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> list[Membership]:
    result = []
    for line in text.splitlines():
        number, sep1, rest = line.partition(":")
        names, sep2, path = rest.partition(":")
        if not (sep1 and sep2 and number.isdigit()):
            continue
        controllers = frozenset(names.split(",")) if names else frozenset()
        result.append(Membership(int(number), controllers, path))
    return result


def relative_to_root(path: str, root: str) -> str | None:
    """``path`` inside a mount showing ``root``, or None when the mount does not contain it."""
    p, r = PurePosixPath(path), PurePosixPath(root)
    if ".." in p.parts or ".." in r.parts:
        return None  # outside our cgroup namespace: nothing we could address
    if p == r:
        return ""
    if r in p.parents:
        return str(p.relative_to(r))
    return None


def find_hierarchies(mountinfo: str, proc_cgroup: str) -> tuple[list[Hierarchy], list[str]]:
    """The usable hierarchies (v1 ones with a controller we use, and cgroup2), plus a note
    for each one that is present but cannot be used."""
    mounts = parse_mountinfo(mountinfo)
    found: list[Hierarchy] = []
    notes: list[str] = []
    for member in parse_proc_cgroup(proc_cgroup):
        if member.hierarchy_id == 0 and not member.controllers:
            version, candidates = 2, [m for m in mounts if m.fstype == "cgroup2"]
        elif member.controllers & V1_CONTROLLERS:
            version = 1
            candidates = [
                m for m in mounts if m.fstype == "cgroup" and member.controllers <= m.options
            ]
        else:
            continue
        label = "unified" if version == 2 else ",".join(sorted(member.controllers))
        if not candidates:
            if version == 1:  # a cgroup2 line exists on every kernel, mounted or not
                notes.append(f"{label}: in /proc/self/cgroup but not mounted")
            continue
        for mount in candidates:
            relative = relative_to_root(member.path, mount.root)
            if relative is not None:
                found.append(
                    Hierarchy(
                        version, member.controllers, mount.mount_point, mount.mount_point / relative
                    )
                )
                break
        else:
            notes.append(
                f"{label}: our group {member.path} is outside the mounted subtree "
                f"{candidates[0].root} at {candidates[0].mount_point}"
            )
    return found, notes
