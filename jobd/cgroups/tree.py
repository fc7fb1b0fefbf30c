"""Whole-tree kill and emptiness for cgroup2 directories, shared by the v2 backend and by the
v1 backend's use of the controller-less unified hierarchy; plus the freezer fallback."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from jobd.cgroups.files import read_keyed, sigkill_members, write_value
from jobd.cgroups.inotify import wait_until

# Freezing completes within microseconds unless a task sits in an uninterruptible sleep;
# past this we kill what is listed anyway and repeat, rather than hang the caller.
FREEZE_TIMEOUT = 1.0
KILL_ROUNDS = 20


def kill_cgroup2(path: Path) -> None:
    """cgroup.kill (Linux 5.14+); before that, freeze with cgroup.freeze and SIGKILL."""
    try:
        write_value(path / "cgroup.kill", 1)
        return
    except FileNotFoundError:
        if not path.exists():
            return  # already removed: nothing left to kill
    events = path / "cgroup.events"
    freeze_and_kill(
        freeze=lambda: write_value(path / "cgroup.freeze", 1),
        is_frozen=lambda: read_keyed(events).get("frozen") == 1,
        thaw=lambda: write_value(path / "cgroup.freeze", 0),
        procs_files=tree_procs(path),
    )


def is_populated(path: Path) -> bool:
    try:
        return read_keyed(path / "cgroup.events").get("populated", 0) != 0
    except FileNotFoundError:
        return False  # removed, and rmdir succeeds only on an empty group


async def wait_unpopulated(path: Path) -> None:
    """Sleep until ``populated 0`` in cgroup.events; it counts descendants' groups too."""
    try:
        await wait_until(path / "cgroup.events", lambda: not is_populated(path))
    except FileNotFoundError:
        return


def freeze_and_kill(
    freeze: Callable[[], None],
    is_frozen: Callable[[], bool],
    thaw: Callable[[], None],
    procs_files: list[Path],
) -> None:
    """The pre-cgroup.kill recipe: a frozen task can neither fork nor exit, so the list read
    from the group is complete and its PIDs cannot be reused before the signal lands."""
    freeze()
    try:
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while not (frozen := is_frozen()) and time.monotonic() < deadline:
            time.sleep(0.001)
        for procs in procs_files:
            sigkill_members(procs)
    finally:
        thaw()  # SIGKILL is acted on only once the task runs again
    if not frozen:
        kill_until_empty(procs_files)


def kill_until_empty(procs_files: list[Path]) -> None:
    """Last resort without a freezer: repeat until no member is left to signal. A task forked
    between reading and signalling is caught by the next round."""
    for _ in range(KILL_ROUNDS):
        if sum(sigkill_members(procs) for procs in procs_files) == 0:
            return


def tree_procs(path: Path) -> list[Path]:
    """cgroup.procs of ``path`` and of every group a job made below it."""
    return [d / "cgroup.procs" for d in _tree(path)]


def _tree(path: Path) -> list[Path]:
    dirs = [path]
    with contextlib.suppress(FileNotFoundError):
        for root, subdirs, _files in os.walk(path):
            dirs.extend(Path(root, d) for d in subdirs)
    return dirs


def rmdir_tree(path: Path) -> None:
    """rmdir ``path`` after any child groups a job made itself; gone already is fine."""
    try:
        os.rmdir(path)  # the common case: no child groups, so no walk
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise
    for directory in reversed(_tree(path)):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise OSError(exc.errno, f"cgroup still has processes: {directory}") from exc
            raise
