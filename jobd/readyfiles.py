"""Empty files made ahead, on a worker thread, to become the output logs of jobs to come.

Creating a file can cost far more than renaming one. When ext4 allocates an inode it steps
over those freed in the last ``dirty_expire`` seconds (``recently_deleted()`` in
``find_inode_bit()``), so after a mass delete (retention, or a build's cleanup) a create near
the deleted files costs up to ~1 ms of CPU for tens of seconds, where a rename costs ~15 µs.
A StartJob would spend that on the event loop, and every call and job would wait with it. So
the inodes are allocated here, ahead of need and off the event loop, and a start only renames
one of them into place (:meth:`ReadyFiles.place`).

Nothing depends on a ready file being there: without one (none made yet, the directory
unusable, a burst faster than the refills) the output log creates its file as before, with the
same errors. The directory holds nothing else and is emptied whenever jobd starts, so what a
daemon that died left there is removed by the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import trio

log = logging.getLogger(__name__)

# How many are kept ready: a start that finds none after the first refill doubles it, up to
# MAX_KEEP. A daemon that starts a few jobs keeps a few (each one left over is deleted at exit,
# and deleted files are what slow the creates after them), and a burst gets many.
MIN_KEEP = 16
MAX_KEEP = 256
RETRY_AFTER = 5.0  # after a failed refill (full disk, no permission)


class ReadyFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keep = MIN_KEEP
        self._ready: list[str] = []
        self._made = 0  # names the next file: unique within this daemon's run
        self._usable = False
        self._wanted = trio.Event()  # set: a refill is asked for
        self._idle = trio.Event()  # set: none asked for, none under way
        self._idle.set()

    def clear(self) -> None:
        """Remove what an earlier daemon left in the directory, and make it. A directory that
        cannot be made leaves this off: every log is then created where it is used."""
        try:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(mode=0o700)
        except OSError as exc:
            log.warning("no ready output files (%s): each job's log is created at its start",
                        exc)
            return
        self._usable = True

    def place(self, path: Path) -> None:
        """Move an empty ready file to ``path`` if one is at hand; else do nothing, and the
        caller's ``O_CREAT`` makes the file. Never raises."""
        if not self._ready:
            if self._usable:
                if self._made:  # ran dry: starts come faster than refills
                    self.keep = min(2 * self.keep, MAX_KEEP)
                self._ask()
            return
        ready = self._ready.pop()
        if len(self._ready) < self.keep // 2:
            self._ask()
        try:
            os.rename(ready, path)
        except OSError as exc:
            # Another file system under the output directory (EXDEV), or the directory gone:
            # the next start would fail alike, so stop using ready files.
            log.warning("ready output files left off: cannot move %s to %s: %s",
                        ready, path, exc.strerror)
            _remove([ready])
            self.close()

    def _ask(self) -> None:
        self._wanted.set()
        if self._idle.is_set():
            self._idle = trio.Event()

    async def keep_ready(self) -> None:
        """Refill whenever a start has left fewer than half (or none, at first): the files are
        made on a worker thread, in one trip per batch."""
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
        names = [str(self.directory / str(self._made + i))
                 for i in range(self.keep - len(self._ready))]
        if not names:
            return
        self._made += len(names)
        # Not cancellable: whatever the thread made is ours to know of, and to remove.
        made, error = await trio.to_thread.run_sync(_make, names)
        if self._usable:
            self._ready.extend(made)
        else:  # closed meanwhile
            _remove(made)
        if error is not None:
            log.warning("cannot make ready output files (%s); trying again in %g s",
                        error, RETRY_AFTER)
            await trio.sleep(RETRY_AFTER)
            self._ask()

    async def wait_idle(self) -> None:
        """Until no refill is asked for or under way."""
        await self._idle.wait()

    def close(self) -> None:
        """Remove the ready files; later starts create their logs themselves."""
        self._usable = False
        self._wanted.set()  # lets keep_ready return
        ready, self._ready = self._ready, []
        _remove(ready)

    def __len__(self) -> int:
        return len(self._ready)


def _make(names: list[str]) -> tuple[list[str], str | None]:
    """Create ``names`` as empty files, as the output log would (mode 0600); stop at the
    first failure and say why."""
    made: list[str] = []
    for name in names:
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            return made, exc.strerror or str(exc)
        made.append(name)
    return made, None


def _remove(names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(name)
