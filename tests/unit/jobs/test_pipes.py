"""How the pumps read a job's pipe: bulk off the event loop, a little inline, every byte once."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from jobd.jobs import pipes


class Writer:
    """The job's end of the pipe."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        assert os.write(self.fd, data) == len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
async def pipe() -> AsyncIterator[tuple[trio.lowlevel.FdStream, Writer]]:
    r, w = os.pipe()
    stream = trio.lowlevel.FdStream(r)  # takes r, and makes it non-blocking
    pipes.grow(stream)
    writer = Writer(w)
    try:
        yield stream, writer
    finally:
        await stream.aclose()
        writer.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each os.read the module makes: its size, and whether it ran on the event loop's thread."""
    loop_thread = threading.get_ident()
    seen: list[tuple[int, bool]] = []
    real = os.read

    def read(fd: int, n: int) -> bytes:
        data = real(fd, n)
        seen.append((len(data), threading.get_ident() == loop_thread))
        return data

    monkeypatch.setattr(pipes.os, "read", read)
    return seen


async def test_a_full_pipe_is_copied_on_a_worker_thread(
    pipe: tuple[trio.lowlevel.FdStream, Writer], reads: list[tuple[int, bool]],
) -> None:
    stream, w = pipe
    data = os.urandom(pipes.PIPE_SIZE)
    w.write(data)  # fits: the pipe was grown to PIPE_SIZE
    assert pipes.waiting(stream.fileno()) == pipes.PIPE_SIZE
    assert await pipes.receive(stream) == data
    assert reads == [(pipes.PIPE_SIZE, False)]


async def test_a_little_is_read_inline(
    pipe: tuple[trio.lowlevel.FdStream, Writer], reads: list[tuple[int, bool]],
) -> None:
    stream, w = pipe
    w.write(b"one line\n")
    assert await pipes.receive(stream) == b"one line\n"
    assert reads == [(9, True)]


async def test_an_inline_read_copies_at_most_inline_max(
    pipe: tuple[trio.lowlevel.FdStream, Writer], reads: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The job may fill the pipe between the count and the read: the loop still copies little.
    stream, w = pipe
    data = os.urandom(pipes.PIPE_SIZE)
    w.write(data)
    monkeypatch.setattr(pipes, "waiting", lambda fd: 0)
    got = await pipes.receive(stream)
    assert got == data[: pipes.INLINE_MAX]
    assert reads == [(pipes.INLINE_MAX, True)]


async def test_every_byte_once_in_order_then_the_end(
    pipe: tuple[trio.lowlevel.FdStream, Writer], reads: list[tuple[int, bool]],
) -> None:
    stream, w = pipe
    # Sizes either side of INLINE_MAX, each written while the reader waits on an empty pipe.
    parts = [os.urandom(n) for n in (1, pipes.INLINE_MAX, pipes.INLINE_MAX + 1, 300_000, 7)]
    got = bytearray()
    progress_in, progress = trio.open_memory_channel[int](len(parts) * 8)

    async def reader() -> None:
        while data := await pipes.receive(stream):
            got.extend(data)
            progress_in.send_nowait(len(got))
        progress_in.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        total = 0
        for part in parts:
            w.write(part)
            total += len(part)
            while await progress.receive() < total:
                pass
        w.close()
        # The reader sees the end (b"") and returns.
        assert [n async for n in progress] == []
    assert bytes(got) == b"".join(parts)
    assert {inline for _, inline in reads} == {True, False}


async def test_a_waiting_read_is_cancelled_cleanly(
    pipe: tuple[trio.lowlevel.FdStream, Writer],
) -> None:
    stream, w = pipe
    with trio.move_on_after(0.05) as scope:
        await pipes.receive(stream)
    assert scope.cancelled_caught
    w.write(b"after")
    assert await pipes.receive(stream) == b"after"


async def test_other_streams_read_themselves() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(b"x" * 10)
    assert await pipes.receive(receive, 4) == b"xxxx"


async def test_copies_take_threads_of_their_own_never_the_default_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # However many jobs write flat out, their copies wait for each other, not for (nor in
    # front of) the log writers, the store and other identities' tails on trio's threads.
    limiter = trio.CapacityLimiter(2)
    monkeypatch.setattr(pipes, "copiers", lambda: limiter)
    release = threading.Event()
    real = os.read

    def held(fd: int, n: int) -> bytes:
        assert release.wait(10)
        return real(fd, n)

    monkeypatch.setattr(pipes.os, "read", held)
    ends = [os.pipe() for _ in range(3)]
    streams = [trio.lowlevel.FdStream(r) for r, _ in ends]
    try:
        for stream, (_, w) in zip(streams, ends, strict=True):
            pipes.grow(stream)
            os.write(w, b"x" * (pipes.INLINE_MAX + 1))
        got: list[int] = []

        async def read(stream: trio.lowlevel.FdStream) -> None:
            got.append(len(await pipes.receive(stream)))

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(read, stream)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.borrowed_tokens == 2  # the third copy waits for one of them
            assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
            release.set()
        assert got == [pipes.INLINE_MAX + 1] * 3
    finally:
        release.set()
        for stream, (_, w) in zip(streams, ends, strict=True):
            await stream.aclose()
            os.close(w)
