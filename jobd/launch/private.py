"""Which directories of this host anyone may write to: each job with a mount namespace gets an
empty tmpfs of its own on every one of them, so no two jobs (and no job and the host) share a
writable place through them.

Found once, at start, by walking the local file systems a few levels deep (world-writable
directories live near the top: /tmp, /var/tmp, /run/lock, /dev/shm, /var/lib/php/sessions).
The walk never follows a symbolic link and never enters a pseudo or network file system; a
deeper one it does not find is still covered where the role's file system is read-only (every
``user`` job by default), and the usual ones are always included when they exist.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass

from jobd.cgroups.mounts import _unescape

USUAL = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")
MAX_DEPTH = 4  # /var/lib/php/sessions
MAX_DIRECTORIES = 100_000
TIME_BUDGET = 5.0  # seconds
# File systems whose directories are not the host's own storage, or that may hang a walk.
SKIP_TYPES = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs",
    "securityfs", "bpf", "pstore", "configfs", "fusectl", "hugetlbfs", "autofs",
    "binfmt_misc", "efivarfs", "rpc_pipefs", "nsfs", "nfs", "nfs4", "cifs", "smb3", "ceph",
    "glusterfs", "9p", "afs", "sshfs",
})  # fmt: skip


@dataclass(frozen=True)
class Found:
    directories: tuple[str, ...]
    complete: bool  # False: the walk stopped at its budget (the log says so)


def skipped_mounts(mountinfo: str) -> set[str]:
    """Mount points of the file systems the walk does not enter."""
    skipped = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 2 or dash < 5:
            continue
        fstype = fields[dash + 1]
        if fstype in SKIP_TYPES or fstype.startswith("fuse"):
            skipped.add(_unescape(fields[4]))
    return skipped


def world_writable(path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_IWOTH)


def find(exclude: Iterable[str] = (), *, root: str = "/", mountinfo: str | None = None,
         budget: float = TIME_BUDGET) -> Found:
    """Every world-writable directory to ``MAX_DEPTH`` levels below ``root``, the usual ones
    (through their symbolic links: /var/lock is /run/lock) included, sorted, each once."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mountinfo = f.read()
    skip = skipped_mounts(mountinfo) | {os.path.normpath(e) for e in exclude}
    found: set[str] = set()
    for usual in USUAL:
        real = os.path.realpath(usual)
        if world_writable(real) and real not in skip:
            found.add(real)
    deadline = time.monotonic() + budget
    seen = 0
    level = [root]
    for _depth in range(MAX_DEPTH):
        deeper = []
        for directory in level:
            if seen >= MAX_DIRECTORIES or time.monotonic() > deadline:
                return Found(_outermost(found), False)
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                seen += 1
                if entry.path in skip:
                    continue
                if mode & stat.S_IWOTH:
                    found.add(entry.path)  # what is below is hidden with it: not walked
                else:
                    deeper.append(entry.path)
        level = deeper
    return Found(_outermost(found), True)


def _outermost(found: set[str]) -> tuple[str, ...]:
    """Sorted, without those inside another (a tmpfs on the outer one hides them)."""
    kept: list[str] = []
    for path in sorted(found):
        if not any(path.startswith(outer.rstrip("/") + "/") for outer in kept):
            kept.append(path)
    return tuple(kept)
