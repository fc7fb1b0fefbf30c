"""Anonymous files made ahead, on a worker thread, to become the output logs of jobs to come.

Creating a file can cost far more than naming one. When ext4 allocates an inode it steps over
those freed in the last ``dirty_expire`` seconds (``recently_deleted()`` in
``find_inode_bit()``), so after a mass delete (retention, or a build's cleanup) a create near
the deleted files costs up to ~1 ms of CPU for tens of seconds, where a link costs ~15 µs. A
StartJob would spend that on the event loop, and every call and job would wait with it. So the
inodes are allocated here, ahead of need and off the event loop, and a start only links one of
them into the output directory (:meth:`ReadyFiles.take`).

They are ``O_TMPFILE`` files: open, nameless, and in no directory until linked. Making one takes
no directory lock, so the refills never hold up a start's link (ready files made as named
files in a directory of their own held that directory's lock through each slow create, and a
start's rename out of it waited behind it: 0.3 ms at the median). And what a daemon that dies
leaves made is freed by the kernel with its descriptors: there is nothing to clean up.

Nothing depends on a ready file being there: without one (none made yet, a file system without
``O_TMPFILE``, a burst faster than the refills) the output log creates its file as before, with
the same errors.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import time
from pathlib import Path

import trio

log = logging.getLogger(__name__)

# How many are kept ready: a start that finds none after the first refill doubles it, up to
# MAX_KEEP, and to no more than 1/FD_SHARE of the descriptors the daemon may open (each ready
# file is one). A daemon that starts a few jobs keeps a few, and a burst gets many.
MIN_KEEP = 16
MAX_KEEP = 256
FD_SHARE = 64
RETRY_AFTER = 5.0  # after a failed refill (full disk, descriptors used up)
# A refill hands over what it has made after this long, so that a burst of starts is not left
# without while it makes a whole batch of slow creates (then ~1 ms each).
TRIP = 0.002
# What a file system or kernel without O_TMPFILE answers: no later refill would do better.
UNSUPPORTED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
FLAGS = os.O_TMPFILE | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC  # those of an OutputLog


class ReadyFiles:
    """Ready files for ``directory``; :meth:`open` before use, :meth:`close` after."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keep = MIN_KEEP
        self._ready: list[int] = []  # descriptors
        self._asked = False  # whether a start has asked for any yet
        self._dir_fd: int | None = None
        self._usable = False
        self._refilling = False  # a worker thread uses _dir_fd: it stays open till it is done
        self._wanted = trio.Event()  # set: a refill is asked for
        self._idle = trio.Event()  # set: none asked for, none under way
        self._idle.set()

    def open(self) -> None:
        """Open the directory. One that cannot be opened leaves this off: every log is then
        created where it is used."""
        try:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            self._off(f"cannot open {self.directory}: {exc.strerror}")
            return
        self._usable = True

    def take(self, name: str) -> int | None:
        """Link an empty ready file into the directory as ``name`` and hand over its
        descriptor (open for appending, like an OutputLog's); or return None if none is at
        hand, and the caller's ``O_CREAT`` makes the file. Never raises."""
        if not self._usable:
            return None
        if not self._ready:
            if self._asked:  # ran dry: starts come faster than refills
                self.keep = min(2 * self.keep, _max_keep())
            self._asked = True
            self._ask()
            return None
        fd = self._ready.pop()
        if len(self._ready) < self.keep // 2:
            self._ask()
        try:
            # linkat(AT_SYMLINK_FOLLOW) through /proc: the way to name an O_TMPFILE file
            # without CAP_DAC_READ_SEARCH (open(2)).
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=self._dir_fd, follow_symlinks=True)
        except OSError as exc:
            # /proc not mounted, or the directory gone: the next start would fail alike.
            os.close(fd)
            self._off(f"cannot link one as {self.directory / name}: {exc.strerror}")
            return None
        return fd

    def _ask(self) -> None:
        self._wanted.set()
        if self._idle.is_set():
            self._idle = trio.Event()

    async def keep_ready(self) -> None:
        """Refill whenever a start has left fewer than half (or none, at first): the files are
        made on a worker thread, in trips of at most TRIP seconds each."""
        try:
            while self._usable:
                if not self._wanted.is_set():
                    self._idle.set()
                await self._wanted.wait()
                self._wanted = trio.Event()
                if self._usable:
                    await self._refill()
        finally:
            self._idle.set()

    async def _refill(self) -> None:
        error = None
        while error is None and self._dir_fd is not None and len(self._ready) < self.keep:
            self._refilling = True
            try:
                # Not cancellable: whatever the thread made is ours to know of, and to close.
                made, error = await trio.to_thread.run_sync(
                    _make, self._dir_fd, self.keep - len(self._ready))
            finally:
                self._refilling = False
            if not self._usable:  # closed meanwhile
                _close(made)
                self._close_dir()
                return
            self._ready.extend(made)
        if error is None:
            return
        if error.errno in UNSUPPORTED:
            self._off(f"{self.directory} cannot hold O_TMPFILE files ({error.strerror})")
            return
        log.warning("cannot make ready output files (%s); trying again in %g s",
                    error.strerror, RETRY_AFTER)
        await trio.sleep(RETRY_AFTER)
        self._ask()

    async def wait_idle(self) -> None:
        """Until no refill is asked for or under way."""
        await self._idle.wait()

    def _off(self, why: str) -> None:
        log.warning("no ready output files (%s): each job's log is created at its start", why)
        self.close()

    def close(self) -> None:
        """Close the ready files (the kernel frees them: they have no name); later starts
        create their logs themselves."""
        self._usable = False
        if not self._refilling:
            self._close_dir()
        self._wanted.set()  # lets keep_ready return
        ready, self._ready = self._ready, []
        _close(ready)

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __len__(self) -> int:
        return len(self._ready)


def _max_keep() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_KEEP
    return max(MIN_KEEP, min(MAX_KEEP, soft // FD_SHARE))


def _make(dir_fd: int, count: int) -> tuple[list[int], OSError | None]:
    """Open up to ``count`` nameless files in the directory, as the output log would (mode
    0600), for at most TRIP seconds; stop at the first failure and return it."""
    made: list[int] = []
    deadline = time.monotonic() + TRIP
    while len(made) < count:
        try:
            # "." under dir_fd: the directory itself, even if renamed since it was opened.
            made.append(os.open(".", FLAGS, 0o600, dir_fd=dir_fd))
        except OSError as exc:
            return made, exc
        if time.monotonic() >= deadline:
            break
    return made, None


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
