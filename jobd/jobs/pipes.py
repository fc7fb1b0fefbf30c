"""A job's output pipes: how large they are, and how the pumps read them.

A job writing flat out keeps its pipe full, and copying a full pipe (up to 1 MiB) out of the
kernel took the event loop ~0.5 ms a read on this machine: a quarter of the loop's time, spent
while every RPC waited (GetJob's p99 was 3-5x idle; BENCHMARKS.md). So a read of more than
a little is done on a worker thread, where the copy runs without the GIL, and the loop only
hands the bytes on. A job printing a line now and then is read inline: a thread hop would cost
it more than its copy.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import termios

import trio

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

# A job writing fast blocks less on a larger pipe (Linux's unprivileged maximum), and each
# read of up to this much costs the broadcast, the writer and each follower one step: 1 MiB
# reads took ~12 % more through `jobctl run` than 256 KiB ones (docs/perf-notes/lab.md).
PIPE_SIZE = 1024 * 1024

# At most this much is copied on the event loop in one read (~10 us); more waits for a thread.
INLINE_MAX = 64 * 1024

# The copies take threads of their own, as many as there are cores (more copy no faster): any
# number of jobs writing flat out never hold the worker threads that the log writers, the
# store's pages and the tails of other identities' logs wait for (trio's default limiter).
_COPIERS: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("jobd_pipe_copiers")


def copiers() -> trio.CapacityLimiter:
    """This run's limiter of pipe copies on worker threads."""
    try:
        return _COPIERS.get()
    except LookupError:
        limiter = trio.CapacityLimiter(max(2, os.cpu_count() or 1))
        _COPIERS.set(limiter)
        return limiter


def grow(pipe: trio.abc.ReceiveStream) -> None:
    # The default 64 KiB is fine if refused.
    if isinstance(pipe, trio.lowlevel.FdStream):
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


def waiting(fd: int) -> int:
    """How many bytes the pipe holds (0 where the kernel cannot say)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


async def receive(pipe: trio.abc.ReceiveStream, max_bytes: int = PIPE_SIZE) -> bytes | bytearray:
    """Up to ``max_bytes`` from ``pipe``; b"" at its end. An ``FdStream`` with more than
    INLINE_MAX waiting is read on a worker thread; other streams as they read themselves."""
    if not isinstance(pipe, trio.lowlevel.FdStream):
        return await pipe.receive_some(max_bytes)
    fd = pipe.fileno()
    await trio.lowlevel.checkpoint()
    while True:
        try:
            if waiting(fd) > INLINE_MAX:
                # Not abandoned on cancel: the fd is non-blocking, so the read returns at once.
                return await trio.to_thread.run_sync(os.read, fd, max_bytes,
                                                     limiter=copiers())  # fmt: skip
            return os.read(fd, min(max_bytes, INLINE_MAX))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
        except OSError as exc:
            # As trio.lowlevel.FdStream.receive_some says them.
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("file was already closed") from None
            raise trio.BrokenResourceError from exc
