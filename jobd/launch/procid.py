"""Process identity that survives PID reuse: boot id plus what tells this process from any
other that had or will have its PID.

A stored PID alone may name another process after a restart; (boot id, start time, pid)
names exactly one process ever, so a process group is signalled only if its leader is still
the very process that was recorded. Since Linux 6.9 (pidfs) a pidfd's inode number does the
same job: the kernel gives every process its own until reboot. It is one ``fstat`` of the
pidfd jobd holds anyway, where reading the start time from ``/proc/PID/stat`` right after a
spawn costs ~25 µs (it waits on the new process's exec); the start time is the fallback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from pathlib import Path

from jobd.model.readfile import read_bytes


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


PIDFS = "pidfs-"


@functools.cache
def _pidfs() -> bool:
    """Whether pidfds have an inode of their own (pidfs), not one shared anonymous inode."""
    try:
        own = os.pidfd_open(os.getpid())
    except OSError:
        return False
    try:
        other = os.pidfd_open(os.getppid())
    except OSError:
        os.close(own)
        return False
    try:
        return os.fstat(own).st_ino != os.fstat(other).st_ino
    finally:
        os.close(own)
        os.close(other)


def _pidfs_mark(pidfd: int) -> str:
    return f"{PIDFS}{os.fstat(pidfd).st_ino}"


def _pidfs_inode(pid: int) -> str | None:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        return _pidfs_mark(pidfd)
    finally:
        os.close(pidfd)


def _start_time(pid: int) -> str | None:
    try:
        stat = read_bytes(f"/proc/{pid}/stat", 4096)
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces and parentheses.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def identity(pid: int, pidfd: int = -1) -> str:
    """A string naming this process uniquely; "" if it is gone and no ``pidfd`` is given."""
    if pidfd >= 0 and _pidfs():
        mark: str | None = _pidfs_mark(pidfd)
    else:
        mark = _start_time(pid)
    return f"{_boot_id()}/{mark}/{pid}" if mark is not None else ""


def kill_group_if_same(key: str) -> bool:
    """SIGKILL the process group led by the process ``key`` names, if that process lives."""
    if not key:
        return False
    boot, mark, pid_text = key.split("/")
    pid = int(pid_text)
    if boot != _boot_id():
        return False
    now = _pidfs_inode(pid) if mark.startswith(PIDFS) else _start_time(pid)
    if now != mark:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True
