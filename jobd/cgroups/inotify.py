"""Just enough inotify to sleep until a cgroup file changes.

cgroupfs files such as ``cgroup.events`` and ``memory.events`` raise IN_MODIFY when their
content changes; that is the kernel's documented way to wait for them without polling.

One inotify instance serves every waiter of a trio run, read by one system task, because
(measured here) closing an inotify descriptor blocks for 10-20 ms while the kernel waits
for an SRCU grace period - that would stall the whole event loop each time a job ended -
and because a user may only have 128 instances by default (fs.inotify.max_user_instances),
while watches are plentiful.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import trio

IN_MODIFY = 0x00000002
IN_IGNORED = 0x00008000  # the watch is gone: file removed, or inotify_rm_watch
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (a name of len bytes follows)

_libc = ctypes.CDLL(None, use_errno=True)
_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes = [ctypes.c_int]
_inotify_init1.restype = ctypes.c_int
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_add_watch.restype = ctypes.c_int
_inotify_rm_watch = _libc.inotify_rm_watch
_inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_inotify_rm_watch.restype = ctypes.c_int


def _check(result: int, what: str, path: Path | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", None if path is None else str(path))
    return result


class InotifyHub:
    """Watches shared by reference count; a change to a watched file wakes its waiters."""

    def __init__(self) -> None:
        self.fd = _check(_inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self._users: dict[int, int] = {}  # watch descriptor → waiters using it
        self._changed: dict[int, trio.Event] = {}  # watch descriptor → next change

    def add(self, path: Path) -> int:
        # The same file always gets the same watch descriptor, hence the count.
        wd = _check(_inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY), "inotify", path)
        self._users[wd] = self._users.get(wd, 0) + 1
        return wd

    def release(self, wd: int) -> None:
        self._users[wd] -= 1
        if self._users[wd] == 0:
            del self._users[wd]
            self._changed.pop(wd, None)
            if _inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
                _check(-1, "inotify_rm_watch")  # EINVAL: already gone with its file

    def next_change(self, wd: int) -> trio.Event:
        """An event set at the next change; take it before checking the file's content."""
        if wd not in self._changed:
            self._changed[wd] = trio.Event()
        return self._changed[wd]

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self.fd)
                for wd in self._read_wds():
                    event = self._changed.pop(wd, None)
                    if event is not None:
                        event.set()
        finally:
            os.close(self.fd)  # at the end of the run only: this is the slow close

    def _read_wds(self) -> set[int]:
        wds: set[int] = set()
        with contextlib.suppress(BlockingIOError):
            while True:
                data = os.read(self.fd, 64 * 1024)
                offset = 0
                while offset < len(data):
                    wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                    wds.add(wd)
                    offset += _EVENT.size + length
        return wds


_HUB: trio.lowlevel.RunVar[InotifyHub] = trio.lowlevel.RunVar("jobd_cgroups_inotify")


def _hub() -> InotifyHub:
    try:
        return _HUB.get()
    except LookupError:
        hub = InotifyHub()
        trio.lowlevel.spawn_system_task(hub.run, name="jobd.cgroups inotify reader")
        _HUB.set(hub)
        return hub


async def wait_until(path: Path, done: Callable[[], bool]) -> None:
    """Return once ``done()`` is true, re-checking only when ``path`` reports a change.

    Raises FileNotFoundError if ``done()`` is false and ``path`` does not exist (or if
    ``done`` raises it, e.g. when the file went away with its cgroup).
    """
    if done():  # the common case at a job's end: no watch to set up and take down
        return
    hub = _hub()
    wd = hub.add(path)
    try:
        while True:
            changed = hub.next_change(wd)  # armed before the check: no change is missed
            if done():
                return
            await changed.wait()
    finally:
        hub.release(wd)
