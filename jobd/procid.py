"""Process identity that survives PID reuse: boot id plus the process's start time.

A stored PID alone may name another process after a restart; (boot id, start time, pid)
names exactly one process ever, so a process group is signalled only if its leader is still
the very process that was recorded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from pathlib import Path


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _start_time(pid: int) -> str | None:
    # Read on every job start: plain os calls, half the cost of Path.read_text here.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Field 22 (starttime); the command name in field 2 may contain spaces and parentheses.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def identity(pid: int) -> str:
    """A string naming this process uniquely, or "" if it is already gone."""
    start = _start_time(pid)
    return f"{_boot_id()}/{start}/{pid}" if start is not None else ""


def kill_group_if_same(key: str) -> bool:
    """SIGKILL the process group led by the process ``key`` names, if that process lives."""
    if not key:
        return False
    boot, start, pid_text = key.split("/")
    pid = int(pid_text)
    if boot != _boot_id() or _start_time(pid) != start:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True
