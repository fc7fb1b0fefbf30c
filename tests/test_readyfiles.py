"""Nameless files made ahead for the output logs (jobd.readyfiles), and the manager's use of
them."""

from __future__ import annotations

import errno
import os
import stat
import threading
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
from jobd.readyfiles import FD_SHARE, MAX_KEEP, MIN_KEEP, RETRY_AFTER, ReadyFiles

Make = readyfiles._make


@asynccontextmanager
async def running(ready: ReadyFiles) -> AsyncIterator[ReadyFiles]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ready.keep_ready)
        try:
            yield ready
        finally:
            ready.close()


@asynccontextmanager
async def filled(directory: Path) -> AsyncIterator[ReadyFiles]:
    """Ready files for ``directory``, after a first start has had them made."""
    ready = ReadyFiles(directory)
    ready.open()
    async with running(ready):
        assert ready.take("first.log") is None
        await ready.wait_idle()
        yield ready


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def take_and_close(ready: ReadyFiles, name: str) -> None:
    fd = ready.take(name)
    if fd is not None:
        os.close(fd)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_files_are_made_only_once_a_start_asks_and_have_no_name(tmp_path: Path) -> None:
    ready = ReadyFiles(tmp_path)
    ready.open()
    async with running(ready):
        await ready.wait_idle()
        assert len(ready) == 0  # a daemon that starts nothing makes nothing
        assert ready.take("first.log") is None  # the caller creates this one
        assert names(tmp_path) == set()
        await ready.wait_idle()
        assert len(ready) == MIN_KEEP
        assert names(tmp_path) == set()  # nothing to clean up, whatever becomes of jobd


async def test_take_links_an_empty_private_file_open_for_appending(tmp_path: Path) -> None:
    async with filled(tmp_path) as ready:
        fd = ready.take("job.log")
        assert fd is not None
        try:
            assert names(tmp_path) == {"job.log"}
            info = (tmp_path / "job.log").stat()
            assert (info.st_ino, info.st_size) == (os.fstat(fd).st_ino, 0)
            assert stat.S_IMODE(info.st_mode) == 0o600 & ~current_umask()
            os.write(fd, b"one ")
            os.pwrite(fd, b"two", 0)  # O_APPEND: the offset is ignored, as for an OutputLog
            assert (tmp_path / "job.log").read_bytes() == b"one two"
        finally:
            os.close(fd)
        assert len(ready) == MIN_KEEP - 1


async def test_a_refill_comes_once_fewer_than_half_are_left(tmp_path: Path) -> None:
    async with filled(tmp_path) as ready:
        for i in range(MIN_KEEP // 2):
            take_and_close(ready, f"{i}.log")
        assert len(ready) == MIN_KEEP // 2  # half left: no refill yet
        await ready.wait_idle()
        assert len(ready) == MIN_KEEP // 2
        take_and_close(ready, "one-more.log")
        await ready.wait_idle()
        assert len(ready) == MIN_KEEP
        assert ready.keep == MIN_KEEP  # it never ran dry


async def test_a_refill_hands_over_what_it_made_after_each_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = []

    def recorded(dir_fd: int, count: int) -> tuple[list[int], OSError | None]:
        made = Make(dir_fd, count)
        trips.append(len(made[0]))
        return made

    monkeypatch.setattr(readyfiles, "TRIP", 0.0)  # as if each create took all of a trip
    monkeypatch.setattr(readyfiles, "_make", recorded)
    async with filled(tmp_path) as ready:
        assert len(ready) == MIN_KEEP
    assert trips == [1] * MIN_KEEP


async def burst_until_bound(ready: ReadyFiles) -> list[int]:
    keeps = []
    for burst in range(8):
        for i in range(ready.keep + 1):  # a burst faster than any refill
            take_and_close(ready, f"{burst}-{i}.log")
        await ready.wait_idle()
        keeps.append(ready.keep)
        assert len(ready) == ready.keep
    return keeps


async def test_running_dry_keeps_more_up_to_a_bound(tmp_path: Path) -> None:
    async with filled(tmp_path) as ready:
        keeps = await burst_until_bound(ready)
    assert keeps == [min(MIN_KEEP * 2**n, MAX_KEEP) for n in range(1, 9)]


async def test_a_low_descriptor_limit_bounds_how_many_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readyfiles.resource, "getrlimit", lambda _: (64 * FD_SHARE, 4096))
    async with filled(tmp_path) as ready:
        keeps = await burst_until_bound(ready)
    assert max(keeps) == 64


async def test_close_closes_the_ready_files_and_ends_the_refills(tmp_path: Path) -> None:
    before = open_fds()
    ready = ReadyFiles(tmp_path)
    ready.open()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ready.keep_ready)
            ready.take("first.log")
            await ready.wait_idle()
            assert open_fds() == before + 1 + MIN_KEEP  # the directory, and the files
            ready.close()
            # keep_ready returns by itself: the nursery closes without a cancel.
    assert open_fds() == before
    assert ready.take("after.log") is None
    assert names(tmp_path) == set()


async def test_a_close_during_a_refill_waits_for_it_and_closes_what_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    still_the_directory = []

    def slow_make(dir_fd: int, count: int) -> tuple[list[int], OSError | None]:
        started.set()
        release.wait(10)
        # Closed under the thread, the number could name whatever was opened next.
        still_the_directory.append(os.path.samestat(os.fstat(dir_fd), tmp_path.stat()))
        return Make(dir_fd, count)

    monkeypatch.setattr(readyfiles, "_make", slow_make)
    before = open_fds()
    ready = ReadyFiles(tmp_path)
    ready.open()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ready.keep_ready)
            ready.take("first.log")
            await trio.to_thread.run_sync(started.wait)
            ready.close()
            release.set()
    assert still_the_directory == [True]
    assert open_fds() == before
    assert len(ready) == 0


async def test_an_unusable_directory_leaves_every_create_to_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ready = ReadyFiles(tmp_path / "missing")
    ready.open()
    assert "no ready output files (cannot open" in caplog.text
    with trio.fail_after(10):
        await ready.keep_ready()  # nothing to do: returns at once
    assert ready.take("job.log") is None
    assert len(ready) == 0


async def test_a_failed_link_stops_using_ready_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "output"
    directory.mkdir()
    before = open_fds()
    async with filled(directory) as ready:
        directory.rmdir()  # ENOENT, as a /proc not mounted would be
        assert ready.take("job.log") is None
        assert "no ready output files (cannot link one as" in caplog.text
        assert len(ready) == 0
        assert open_fds() == before
        assert ready.take("job.log") is None


def failing_refills(
    monkeypatch: pytest.MonkeyPatch, clock: trio.testing.MockClock, code: int, times: int | None
) -> list[float]:
    """Have the first ``times`` refill trips (all, for None) fail with ``code``; the list
    returned is filled with when each trip came."""
    calls: list[float] = []

    def make(dir_fd: int, count: int) -> tuple[list[int], OSError | None]:
        calls.append(clock.current_time())
        if times is None or len(calls) <= times:
            return [], OSError(code, os.strerror(code))
        return Make(dir_fd, count)

    monkeypatch.setattr(readyfiles, "_make", make)
    return calls


async def test_a_failed_refill_is_tried_again_later(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = failing_refills(monkeypatch, autojump_clock, errno.ENOSPC, 1)
    async with filled(tmp_path) as ready:
        assert len(ready) == MIN_KEEP
    assert "cannot make ready output files (No space left on device)" in caplog.text
    assert calls[1] - calls[0] >= RETRY_AFTER  # then as many trips as the refill takes


async def test_a_file_system_without_tmpfiles_is_not_asked_again(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = failing_refills(monkeypatch, autojump_clock, errno.EOPNOTSUPP, None)
    async with filled(tmp_path) as ready:
        await trio.sleep(10 * RETRY_AFTER)
        assert ready.take("job.log") is None
        await ready.wait_idle()
    assert len(calls) == 1
    assert "cannot hold O_TMPFILE files" in caplog.text


# --- in the manager -----------------------------------------------------------------------


async def test_jobs_logs_are_ready_files_linked_into_place(tmp_path: Path) -> None:
    output = tmp_path / "state" / "output"
    async with open_manager(tmp_path / "state") as manager:
        first = manager.start("alice", JobSpec(("true",)))
        await manager.wait_finished(first)
        await manager.ready_files.wait_idle()
        before = open_fds()
        ready = {os.fstat(fd).st_ino for fd in manager.ready_files._ready}
        job = manager.start("alice", JobSpec(("echo", "hello")))
        assert (output / f"{job.id}.log").stat().st_ino in ready
        assert len(manager.ready_files) == MIN_KEEP - 1
        await manager.wait_finished(job)
        assert b"hello" in (output / f"{job.id}.log").read_bytes()
        assert open_fds() == before - 1  # the log's descriptor was the ready file's
    assert names(output) == {f"{first.id}.log", f"{job.id}.log"}


async def test_a_log_that_cannot_be_opened_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_descriptors(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    async with open_manager(tmp_path / "state") as manager:
        first = manager.start("alice", JobSpec(("true",)))
        await manager.ready_files.wait_idle()
        before = open_fds()
        monkeypatch.setattr(manager_module, "OutputLog", no_descriptors)
        with pytest.raises(OSError, match="Too many open files"):
            manager.start("alice", JobSpec(("true",)))
        assert len(manager.ready_files) == MIN_KEEP - 1  # one was linked for it ...
        assert names(tmp_path / "state" / "output") == {f"{first.id}.log"}  # ... and removed
        assert open_fds() == before - 1  # ... and closed
