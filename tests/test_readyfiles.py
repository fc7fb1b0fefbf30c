"""Empty files made ahead for the output logs (jobd.readyfiles), and the manager's use of them."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers_unit import open_manager

from jobd import manager as manager_module
from jobd import readyfiles
from jobd.job import JobSpec
from jobd.readyfiles import MAX_KEEP, MIN_KEEP, RETRY_AFTER, ReadyFiles


@asynccontextmanager
async def running(ready: ReadyFiles) -> AsyncIterator[ReadyFiles]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ready.keep_ready)
        try:
            yield ready
        finally:
            ready.close()


@asynccontextmanager
async def filled(tmp_path: Path) -> AsyncIterator[ReadyFiles]:
    """Ready files in ``tmp_path / "ready"``, after a first start has had them made."""
    ready = ReadyFiles(tmp_path / "ready")
    ready.clear()
    async with running(ready):
        ready.place(tmp_path / "first.log")
        await ready.wait_idle()
        yield ready


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


async def test_clear_removes_leftovers_and_makes_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ready"
    directory.mkdir()
    (directory / "7").write_bytes(b"")
    (directory / "sub").mkdir()
    ready = ReadyFiles(directory)
    ready.clear()
    assert names(directory) == set()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


async def test_files_are_made_only_once_a_start_asks(tmp_path: Path) -> None:
    ready = ReadyFiles(tmp_path / "ready")
    ready.clear()
    async with running(ready):
        await ready.wait_idle()
        assert len(ready) == 0  # a daemon that starts nothing makes nothing
        ready.place(tmp_path / "first.log")
        assert not (tmp_path / "first.log").exists()  # the caller creates this one
        await ready.wait_idle()
        assert len(ready) == MIN_KEEP
        assert len(names(tmp_path / "ready")) == MIN_KEEP


async def test_place_moves_an_empty_private_file_into_place(tmp_path: Path) -> None:
    async with filled(tmp_path) as ready:
        before = names(tmp_path / "ready")
        ready.place(tmp_path / "job.log")
        info = (tmp_path / "job.log").stat()
        assert info.st_size == 0
        assert stat.S_IMODE(info.st_mode) == 0o600 & ~current_umask()
        assert len(ready) == MIN_KEEP - 1
        assert len(before - names(tmp_path / "ready")) == 1  # moved, not copied


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_a_refill_comes_once_fewer_than_half_are_left(tmp_path: Path) -> None:
    async with filled(tmp_path) as ready:
        for i in range(MIN_KEEP // 2):
            ready.place(tmp_path / f"{i}.log")
        assert len(ready) == MIN_KEEP // 2  # half left: no refill yet
        await ready.wait_idle()
        assert len(ready) == MIN_KEEP // 2
        ready.place(tmp_path / "one-more.log")
        await ready.wait_idle()
        assert len(ready) == MIN_KEEP
        assert ready.keep == MIN_KEEP  # it never ran dry


async def test_running_dry_keeps_more_up_to_a_bound(tmp_path: Path) -> None:
    async with filled(tmp_path) as ready:
        keeps = []
        for burst in range(8):
            for i in range(ready.keep + 1):  # a burst faster than any refill
                ready.place(tmp_path / f"{burst}-{i}.log")
            await ready.wait_idle()
            keeps.append(ready.keep)
            assert len(ready) == ready.keep
        assert keeps == [min(MIN_KEEP * 2**n, MAX_KEEP) for n in range(1, 9)]


async def test_close_removes_the_ready_files_and_ends_the_refills(tmp_path: Path) -> None:
    ready = ReadyFiles(tmp_path / "ready")
    ready.clear()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ready.keep_ready)
            ready.place(tmp_path / "first.log")
            await ready.wait_idle()
            assert len(ready) == MIN_KEEP
            ready.close()
            # keep_ready returns by itself: the nursery closes without a cancel.
    assert names(tmp_path / "ready") == set()
    ready.place(tmp_path / "after.log")
    assert not (tmp_path / "after.log").exists()


async def test_an_unusable_directory_leaves_every_create_to_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_bytes(b"")
    ready = ReadyFiles(tmp_path / "file" / "ready")  # its parent is not a directory
    ready.clear()
    assert "no ready output files" in caplog.text
    with trio.fail_after(10):
        await ready.keep_ready()  # nothing to do: returns at once
    ready.place(tmp_path / "job.log")
    assert not (tmp_path / "job.log").exists()
    assert len(ready) == 0


async def test_a_failed_move_stops_using_ready_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with filled(tmp_path) as ready:
        ready.place(tmp_path / "missing" / "job.log")  # ENOENT, as EXDEV would be
        assert "ready output files left off" in caplog.text
        assert len(ready) == 0
        assert names(tmp_path / "ready") == set()
        ready.place(tmp_path / "job.log")
        assert not (tmp_path / "job.log").exists()


async def test_a_failed_refill_is_tried_again_later(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = []

    def full_disk_once(names: list[str]) -> tuple[list[str], str | None]:
        calls.append(autojump_clock.current_time())
        if len(calls) == 1:
            return [], "No space left on device"
        return make(names)

    make = readyfiles._make
    monkeypatch.setattr(readyfiles, "_make", full_disk_once)
    async with filled(tmp_path) as ready:
        assert len(ready) == MIN_KEEP
    assert "cannot make ready output files (No space left on device)" in caplog.text
    assert len(calls) == 2 and calls[1] - calls[0] >= RETRY_AFTER


# --- in the manager -----------------------------------------------------------------------


async def test_jobs_logs_are_ready_files_moved_into_place(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        ready_dir = tmp_path / "state" / "ready"
        manager.start("alice", JobSpec(("true",)))
        await manager.ready_files.wait_idle()
        before = {p.name: p.stat().st_ino for p in ready_dir.iterdir()}
        job = manager.start("alice", JobSpec(("true",)))
        log_inode = (tmp_path / "state" / "output" / f"{job.id}.log").stat().st_ino
        gone = set(before) - names(ready_dir)
        assert [before[name] for name in gone] == [log_inode]
    assert names(ready_dir) == set()  # removed at shutdown


async def test_a_daemon_removes_what_one_that_died_left(tmp_path: Path) -> None:
    ready_dir = tmp_path / "state" / "ready"
    ready_dir.mkdir(parents=True)
    (ready_dir / "3").write_bytes(b"")
    async with open_manager(tmp_path / "state"):
        assert names(ready_dir) == set()


async def test_a_log_that_cannot_be_opened_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_descriptors(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    async with open_manager(tmp_path / "state") as manager:
        first = manager.start("alice", JobSpec(("true",)))
        await manager.ready_files.wait_idle()
        monkeypatch.setattr(manager_module, "OutputLog", no_descriptors)
        with pytest.raises(OSError, match="Too many open files"):
            manager.start("alice", JobSpec(("true",)))
        assert len(manager.ready_files) == MIN_KEEP - 1  # one was placed for it ...
        assert names(tmp_path / "state" / "output") == {f"{first.id}.log"}  # ... and removed
