"""Request bounds: the most a single request may carry, checked before any work is done.

Every bound is here, in one place; the README's security section lists them. Sizes are in
bytes of UTF-8. A request over a bound gets INVALID_ARGUMENT naming the bound, except a
malformed job id, which simply names no job (NOT_FOUND, as for any unknown id).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from jobd.model.errors import InvalidArgument

MiB = 1 << 20

MAX_ARGV_ENTRIES = 4096
MAX_ARGV_BYTES = 1 * MiB  # all argv entries together
MAX_ENV_ENTRIES = 1024
MAX_ENV_BYTES = 1 * MiB  # all KEY=VALUE entries together
MAX_PATH_BYTES = 4096  # cwd and argv[0]
MAX_JOB_ID_BYTES = 64  # job ids are UUIDs (36 characters)
MAX_OWNER_BYTES = 256  # ListJobs' owner filter (a certificate CN is at most 64)
MAX_MESSAGE_BYTES = 4 * MiB  # one gRPC request message, refused before it is read
# What a job's record carries of its request in lists, logs and every save of its state: a
# summary this big at most (GetJob still returns the request whole, kept once).
SUMMARY_ARGV_BYTES = 4096
SUMMARY_ENV_BYTES = 2048
MAX_PAGE_BYTES = 4 * MiB  # one ListJobs reply: a page over it is cut short, not refused

_JOB_ID = re.compile(r"[0-9a-f-]*")
# What a job's environment variable may be called: what a shell passes on (a job's own shell
# drops any other name from the environment it hands down).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_command(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> None:
    """Raise InvalidArgument naming the first bound the command is over."""
    if len(argv) > MAX_ARGV_ENTRIES:
        raise InvalidArgument(f"argv has {len(argv)} entries; the most is {MAX_ARGV_ENTRIES}")
    total = sum(_size(arg) for arg in argv)
    if total > MAX_ARGV_BYTES:
        raise InvalidArgument(f"argv has {total} bytes in all; the most is {MAX_ARGV_BYTES}")
    if argv and _size(argv[0]) > MAX_PATH_BYTES:
        raise InvalidArgument(f"argv[0] is {_size(argv[0])} bytes; the most is {MAX_PATH_BYTES}")
    if len(env) > MAX_ENV_ENTRIES:
        raise InvalidArgument(f"env has {len(env)} entries; the most is {MAX_ENV_ENTRIES}")
    total = sum(_size(k) + 1 + _size(v) for k, v in env.items())
    if total > MAX_ENV_BYTES:
        raise InvalidArgument(
            f"env has {total} bytes in all (as KEY=VALUE); the most is {MAX_ENV_BYTES}"
        )
    if _size(cwd) > MAX_PATH_BYTES:
        raise InvalidArgument(f"cwd is {_size(cwd)} bytes; the most is {MAX_PATH_BYTES}")


def job_id_plausible(job_id: str) -> bool:
    """Could this name a job? Longer ids, or other characters, are not looked up at all."""
    return len(job_id) <= MAX_JOB_ID_BYTES and _JOB_ID.fullmatch(job_id) is not None


def shown_job_id(job_id: str) -> str:
    """The id as an error message may echo it: never more than the bound."""
    if len(job_id) <= MAX_JOB_ID_BYTES:
        return job_id
    return job_id[:MAX_JOB_ID_BYTES] + "..."


def check_owner(owner: str) -> None:
    if _size(owner) > MAX_OWNER_BYTES:
        raise InvalidArgument(
            f"owner filter is {_size(owner)} bytes; the most is {MAX_OWNER_BYTES}"
        )


def request_size(argv: Sequence[str], env: Mapping[str, str]) -> int:
    return sum(_size(a) for a in argv) + sum(_size(k) + 1 + _size(v) for k, v in env.items())


def summarize_argv(argv: Sequence[str], budget: int = SUMMARY_ARGV_BYTES) -> list[str]:
    """``argv`` if it fits in ``budget`` bytes; else as much of it as fits, the argument that
    does not fit cut short, and a last word saying what was left out, all within ``budget``
    (so a summary summarized again is itself)."""
    total = sum(_size(a) for a in argv)
    if total <= budget:
        return list(argv)
    marker = f"... ({len(argv)} arguments, {total} bytes in all)"
    room_left = max(0, budget - _size(marker))
    kept: list[str] = []
    for arg in argv:
        if _size(arg) <= room_left:
            kept.append(arg)
            room_left -= _size(arg)
            continue
        if room_left > 0:
            cut = arg.encode("utf-8", "surrogatepass")[:room_left].decode("utf-8", "ignore")
            kept.append(cut)
        break
    kept.append(marker)
    return kept


def summarize_env(env: Mapping[str, str], budget: int = SUMMARY_ENV_BYTES) -> dict[str, str]:
    """``env`` if it fits in ``budget`` bytes, else none of it (a summary of variables would
    read as the real thing)."""
    size = sum(_size(k) + 1 + _size(v) for k, v in env.items())
    return dict(env) if size <= budget else {}
