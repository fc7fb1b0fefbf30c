"""Reading and writing cgroup control files.

Writes go through one ``os.write`` on an unbuffered descriptor: the kernel parses each
write as one command, and a buffered writer could split or merge them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path

from jobd.model.readfile import read_bytes


def read_text(path: Path) -> str:
    return read_bytes(path).decode("ascii")  # each job's end reads several control files


def write_value(path: Path, value: str | int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode("ascii"))
    except OSError as exc:
        exc.filename = os.fspath(path)  # the kernel's refusal means little without the file
        raise
    finally:
        os.close(fd)


def read_keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (memory.events, cgroup.events, cpu.stat, ...) as a dict."""
    result: dict[str, int] = {}
    for line in read_text(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            result[key] = int(value)
    return result


def read_int(path: Path) -> int:
    return int(read_text(path).strip())


def read_pids(procs_file: Path) -> list[int]:
    try:
        return [int(line) for line in read_text(procs_file).split()]
    except FileNotFoundError:
        return []


def sigkill_members(procs_file: Path) -> int:
    """SIGKILL each process listed now in ``procs_file``; returns how many were signalled.

    Only safe against PID reuse when the group is frozen (or its tasks cannot exit): used
    on kernels without cgroup.kill, right after reading the list from the cgroup itself.
    """
    return signal_members(procs_file, signal.SIGKILL)


def signal_members(procs_file: Path, signum: int) -> int:
    """Send ``signum`` to each process listed now in ``procs_file``; how many were signalled."""
    count = 0
    for pid in read_pids(procs_file):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
            count += 1
    return count


def rmdir_quiet(path: Path) -> None:
    """rmdir that treats 'already gone' as done; 'busy' still raises."""
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def describe_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def mkdir_error(path: Path, exc: OSError) -> str:
    """Why a group could not be made, with what to do about the usual causes."""
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = " (jobd must run as root, or in a cgroup delegated to its user)"
    elif exc.errno == errno.EROFS:
        hint = " (the cgroup file system is mounted read-only, as in many containers)"
    return f"cannot create {path}: {describe_error(exc)}{hint}"
