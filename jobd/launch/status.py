"""What a launch that failed before its command ran reports, and how a client is told.

The launcher writes one line to its status pipe, ``STEP<TAB>ERRNO<TAB>DETAIL``, and exits;
:func:`failure_message` turns it into the sentence the job record and the client get.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

NOT_EXECUTABLE = "not an executable format (neither ELF nor a #! script)"
DENIED = "permission denied"
# The most a status line may be; the launcher writes at most 4 KiB.
MAX_REPORT = 8192


@dataclass(frozen=True)
class Report:
    step: str
    errno: int
    detail: str


def parse(data: bytes) -> Report:
    """A status line as the launcher wrote it; anything else is reported as it came."""
    text = data.decode("utf-8", "replace").rstrip("\n")
    parts = text.split("\t", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return Report(parts[0], int(parts[1]), parts[2])
    return Report("unknown", 0, text)


def _reason(number: int) -> str:
    if number == errno.ENOEXEC:
        return NOT_EXECUTABLE
    if number == errno.EACCES:
        return DENIED
    return os.strerror(number).lower() if number else "unknown error"


def failure_message(report: Report, argv0: str, cwd: str, who: str = "",
                    private_dirs: tuple[str, ...] = ()) -> str:
    """The sentence for a failed launch. ``who``: " (as nobody)" when the job switched
    accounts; ``private_dirs``: the job's private temporary directories, for a hint."""
    step, number, detail = report.step, report.errno, report.detail
    if step == "cwd":
        problem = {
            errno.ENOENT: "does not exist",
            errno.EACCES: f"is not accessible ({DENIED})",
            errno.ENOTDIR: "is not a directory",
        }.get(number, f"cannot be entered ({_reason(number)})")
        hint = next((f" ({d} is private to each job: it starts empty)" for d in private_dirs
                     if number == errno.ENOENT and (cwd == d or cwd.startswith(d + "/"))), "")
        return f"working directory {cwd!r} {problem}{who}{hint}"
    if step == "exec":
        if number == errno.ENOENT:
            return f"cannot execute {argv0!r}: no such file{who}"
        if number == errno.EACCES and detail != argv0:
            return f"cannot execute {argv0!r}: {DENIED} ({detail}){who}"
        return f"cannot execute {argv0!r}: {_reason(number)}{who}"
    if step == "notfound":
        return f"cannot execute {argv0!r}: command not found in PATH={detail}"
    if step == "cgroup":
        return f"cannot join the job's cgroup {detail}: {_reason(number)}"
    where = f" {detail}" if detail else ""
    return f"cannot set up the job ({step}{where}): {_reason(number)}"
