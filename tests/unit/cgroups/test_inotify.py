"""Waiting for a cgroup file to change, with one inotify instance."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from jobd.cgroups.inotify import wait_until


def inotify_instances() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += "inotify" in os.readlink(f"/proc/self/fd/{fd}")
    return count


async def test_wait_until_wakes_on_change_with_one_inotify_instance(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(3)]
    for f in files:
        f.write_text("0")
    woke: list[int] = []

    async def waiter(i: int) -> None:
        path = files[i % 3]
        await wait_until(path, lambda: path.read_text() == "1")
        woke.append(i)

    async with trio.open_nursery() as nursery:
        # More waiters than fs.inotify.max_user_instances (128) allows instances.
        for i in range(200):
            nursery.start_soon(waiter, i)
        await trio.testing.wait_all_tasks_blocked()
        assert inotify_instances() == 1
        assert woke == []
        files[0].write_text("2")  # a change that does not satisfy anyone
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        for f in files:
            f.write_text("1")
    assert sorted(woke) == list(range(200))
    async with trio.open_nursery() as nursery:  # watches were released and can be re-added
        nursery.start_soon(wait_until, files[0], lambda: files[0].read_text() == "3")
        await trio.testing.wait_all_tasks_blocked()
        files[0].write_text("3")
    assert inotify_instances() == 1


async def test_wait_until_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await wait_until(tmp_path / "missing", lambda: False)


async def test_wait_until_sets_no_watch_when_already_done(tmp_path: Path) -> None:
    await wait_until(tmp_path / "missing", lambda: True)  # a watch would need the file


