"""The output log: frames, followers woken by the log's event, resume, damage, write errors."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import tempfile
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers_unit import by_stream, read_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobd.jobs import output
from jobd.jobs.output import (
    MAX_FRAME_DATA,
    OVERHEAD,
    READ_SIZE,
    Chunk,
    CorruptLog,
    OutputLog,
    Stream,
    follow,
    is_frame_boundary,
    parse_frames,
    tail_start,
)
from jobd.model.errors import DataLoss

OUT, ERR = Stream.STDOUT, Stream.STDERR


def frames(chunks: list[Chunk]) -> list[tuple[Stream, bytes]]:
    return [(c.stream, c.data) for c in chunks]


def runs(items: list[tuple[Stream, bytes]]) -> list[list[tuple[Stream, bytes]]]:
    """``items`` grouped as a reader gets them: consecutive frames of one stream together."""
    grouped: list[list[tuple[Stream, bytes]]] = []
    for item in items:
        if grouped and grouped[-1][0][0] == item[0]:
            grouped[-1].append(item)
        else:
            grouped.append([item])
    return grouped


def joined(items: list[tuple[Stream, bytes]]) -> list[tuple[Stream, bytes]]:
    """``items`` as chunks carry them: each run of one stream's frames as one."""
    return [(run[0][0], b"".join(d for _, d in run)) for run in runs(items)]


def write_log(path: Path, items: list[tuple[Stream, bytes]]) -> OutputLog:
    log = OutputLog(path)
    for stream, data in items:
        log.append(stream, data)
    log.close()
    return log


@pytest.fixture
def overhead(tmp_path: Path) -> int:
    """Bytes a frame adds to its data, measured rather than assumed from the file format."""
    log = write_log(tmp_path / "overhead.log", [(OUT, b"")])
    assert log.size == (tmp_path / "overhead.log").stat().st_size > 0
    return log.size


# --- parse_frames -----------------------------------------------------------------------


def test_parse_frames_whole_and_partial(tmp_path: Path, overhead: int) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT, b"abc"), (ERR, b""), (ERR, b"wxyz")])
    raw = path.read_bytes()
    chunks, used = parse_frames(raw[:-2], 100)
    first_end = overhead + 3
    assert chunks == [
        Chunk(OUT, b"abc", 100 + first_end),
        Chunk(ERR, b"", 100 + first_end + overhead),
    ]
    assert used == first_end + overhead  # the partial third frame is left for the next read
    assert parse_frames(raw, 0)[1] == len(raw)
    assert parse_frames(b"", 0) == ([], 0)
    assert parse_frames(raw[:3], 0) == ([], 0)


@pytest.mark.parametrize("kind", [0, 3, 255])
def test_parse_frames_unknown_type(tmp_path: Path, overhead: int, kind: int) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT, b"a"), (ERR, b"b")])
    raw = bytearray(path.read_bytes())
    second = overhead + 1
    raw[second] = kind  # a frame starts with its stream
    with pytest.raises(CorruptLog, match=f"offset {50 + second}"):
        parse_frames(bytes(raw), 50)


# --- round trips ------------------------------------------------------------------------

ODD_BYTES = [
    (OUT, bytes(range(256))),
    (ERR, b"\x00" * 17),
    (OUT, b"\xff\xfe\xc3\x28\xa0\xa1\xed\xa0\x80"),  # not UTF-8 in several ways
    (ERR, b"no newline"),
    (OUT, b"\r\n\r\n"),
    (OUT, bytes(range(255, -1, -1)) * 3),
]


async def test_round_trip_arbitrary_bytes(tmp_path: Path, overhead: int) -> None:
    path = tmp_path / "j.log"
    log = write_log(path, ODD_BYTES)
    chunks = await read_all(path)
    # Consecutive frames of one stream come as one chunk (the last two here).
    grouped = runs(ODD_BYTES)
    assert len(grouped) == len(ODD_BYTES) - 1
    assert frames(chunks) == joined(ODD_BYTES)
    assert log.data_bytes == sum(len(d) for _, d in ODD_BYTES)
    assert log.size == path.stat().st_size == log.data_bytes + overhead * len(ODD_BYTES)
    assert chunks[-1].next_offset == log.size
    # next_offset is where the frame after the chunk's last one starts.
    offsets = [0, *(c.next_offset for c in chunks)]
    spans = [end - start for start, end in itertools.pairwise(offsets)]
    assert spans == [sum(overhead + len(data) for _, data in run) for run in grouped]


def test_a_log_of_tiny_frames_is_read_as_a_few_chunks(tmp_path: Path, overhead: int) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT, b"x")] * 1000 + [(ERR, b"!")] + [(OUT, b"y")] * 10)
    raw = path.read_bytes()
    chunks, used = parse_frames(raw, 0)
    assert used == len(raw)
    assert frames(chunks) == [(OUT, b"x" * 1000), (ERR, b"!"), (OUT, b"y" * 10)]
    assert [c.next_offset for c in chunks] == [1000 * (overhead + 1), 1001 * (overhead + 1),
                                              len(raw)]  # fmt: skip
    # Frames still count one by one against a batch's bound.
    chunks, used = parse_frames(raw, 0, max_frames=600)
    assert frames(chunks) == [(OUT, b"x" * 600)] and used == 600 * (overhead + 1)


async def test_empty_log_and_empty_appends(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    write_log(empty, [])
    assert empty.stat().st_size == 0
    assert await read_all(empty) == []
    path = tmp_path / "j.log"
    write_log(path, [(ERR, b""), (OUT, b"x"), (OUT, b"")])
    assert by_stream(await read_all(path)) == {OUT: b"x", ERR: b""}


async def test_interleaved_streams_keep_their_order(tmp_path: Path) -> None:
    items = [(OUT if i % 3 else ERR, f"line {i}\n".encode()) for i in range(200)]
    path = tmp_path / "j.log"
    write_log(path, items)
    chunks = await read_all(path)
    assert frames(chunks) == joined(items)
    assert by_stream(chunks) == {
        OUT: b"".join(d for s, d in items if s is OUT),
        ERR: b"".join(d for s, d in items if s is ERR),
    }


async def test_followers_take_frames_larger_than_one_read(tmp_path: Path) -> None:
    # Several maximal frames: a follower needs more than one READ_SIZE read.
    items = [(OUT, bytes([i]) * MAX_FRAME_DATA) for i in range(READ_SIZE // MAX_FRAME_DATA + 2)]
    assert sum(len(d) for _, d in items) > READ_SIZE
    path = tmp_path / "j.log"
    write_log(path, items)
    assert joined(frames(await read_all(path))) == joined(items)


# --- live followers ---------------------------------------------------------------------


async def test_follower_started_first_is_woken_by_each_append(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    got: list[Chunk] = []
    ended = trio.Event()

    async def follower() -> None:
        got.extend(await read_all(path, log))
        ended.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            # Every task is blocked: the follower waits on the log's event (one that spun
            # would never let this return).
            await trio.testing.wait_all_tasks_blocked()
            assert got == [] and not ended.is_set()

            async def writer() -> None:  # appends from another task, as the pumps do
                log.append(OUT, b"first\n")
                await trio.lowlevel.checkpoint()
                log.append(ERR, b"second\n")
                log.append(OUT, b"third\n")

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert not ended.is_set()  # the log is still open: the follower waits for more
            log.close()
    assert ended.is_set()
    assert frames(got) == [(OUT, b"first\n"), (ERR, b"second\n"), (OUT, b"third\n")]


async def test_follower_sees_each_append_before_the_next(tmp_path: Path) -> None:
    """Step by step: after each append and a settle, the follower already holds it.

    A follower that polled with a sleep would still be asleep when every task is blocked again,
    and would not hold the append yet.
    """
    path = tmp_path / "j.log"
    log = OutputLog(path)
    got: list[Chunk] = []

    async def follower() -> None:
        async with contextlib.aclosing(follow(path, log)) as batches:
            async for batch in batches:
                got.extend(batch)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(5):
                log.append(OUT, b"%d" % i)
                await trio.testing.wait_all_tasks_blocked()
                assert [c.data for c in got] == [b"%d" % j for j in range(i + 1)]
            log.close()
    assert len(got) == 5


async def test_follower_without_new_data_keeps_waiting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No output, log open: the follower yields what there is and then waits, for an hour."""
    path = tmp_path / "j.log"
    log = OutputLog(path)
    log.append(OUT, b"only this")
    got: list[Chunk] = []
    with trio.move_on_after(3600) as scope:
        async with contextlib.aclosing(follow(path, log)) as batches:
            async for batch in batches:
                got.extend(batch)
    assert scope.cancelled_caught
    assert trio.current_time() == 3600
    assert frames(got) == [(OUT, b"only this")]
    log.close()


async def test_late_follower_reads_everything(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    items = [(OUT, b"a"), (ERR, b"b"), (OUT, b"c")]
    log = write_log(path, items)
    assert log.closed
    # With the closed live log, and with no live log at all (job long gone).
    assert frames(await read_all(path, log)) == items
    assert frames(await read_all(path, None)) == items


async def test_three_concurrent_followers_see_the_same(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    results: list[list[Chunk]] = [[], [], []]

    async def follower(i: int) -> None:
        results[i] = await read_all(path, log)

    expected = [(OUT if i % 2 else ERR, b"x" * i + b"\n") for i in range(50)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(follower, i)
            await trio.testing.wait_all_tasks_blocked()
            for n, (stream, data) in enumerate(expected):
                log.append(stream, data)
                if n % 7 == 0:
                    await trio.testing.wait_all_tasks_blocked()
                elif n % 3 == 0:
                    await trio.lowlevel.checkpoint()
            log.close()
    assert results[0] == results[1] == results[2]
    assert frames(results[0]) == expected


async def test_follower_joining_midway_gets_the_start_too(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    log.append(OUT, b"before ")
    got: list[Chunk] = []

    async def follower() -> None:
        got.extend(await read_all(path, log))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            log.append(OUT, b"after")
            log.close()
    assert by_stream(got)[OUT] == b"before after"


async def test_resume_from_each_next_offset(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT if i % 2 else ERR, bytes([i]) * (i + 1)) for i in range(12)])
    everything = await read_all(path)
    assert len(everything) == 12
    for i, chunk in enumerate(everything):
        assert await read_all(path, None, chunk.next_offset) == everything[i + 1 :]
    assert await read_all(path, None, 0) == everything


# --- damage -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 4, 5, 7, -1])
async def test_truncated_log_yields_whole_frames_then_data_loss(
    tmp_path: Path, overhead: int, cut: int
) -> None:
    path = tmp_path / "j.log"
    items = [(OUT, b"one"), (ERR, b"two"), (OUT, b"three")]
    log = write_log(path, items)
    # Cut into the last frame, anywhere from its first byte to one before its end.
    last_start = log.size - (overhead + len(b"three"))
    os.truncate(path, last_start + cut if cut > 0 else log.size + cut)
    got: list[Chunk] = []
    with pytest.raises(CorruptLog) as info:
        async with contextlib.aclosing(follow(path, None)) as batches:
            async for batch in batches:
                got.extend(batch)
    assert isinstance(info.value, DataLoss)
    assert str(info.value) == f"output log ends inside a frame at offset {last_start}"
    assert frames(got) == items[:2]


async def test_unknown_frame_type_in_file_is_data_loss(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT, b"ok")])
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"\x09" + good[1:])  # a copy of the frame with stream 9
    with pytest.raises(CorruptLog, match=f"offset {len(good)}"):
        await read_all(path)


async def test_missing_log_is_data_loss(tmp_path: Path) -> None:
    with pytest.raises(CorruptLog, match=r"output log nope\.log is missing") as info:
        await read_all(tmp_path / "nope.log")
    assert isinstance(info.value, DataLoss)


async def test_append_after_close_raises(tmp_path: Path) -> None:
    log = write_log(tmp_path / "j.log", [(OUT, b"x")])
    with pytest.raises(RuntimeError, match="closed output log"):
        log.append(OUT, b"y")
    log.close()  # closing twice is harmless
    assert frames(await read_all(tmp_path / "j.log")) == [(OUT, b"x")]


async def test_close_wakes_waiting_followers(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    event = log.changed
    log.close()
    assert event.is_set()
    assert log.changed is not event and not log.changed.is_set()


async def test_each_append_sets_and_replaces_the_event(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "j.log")
    first = log.changed
    log.append(OUT, b"a")
    assert first.is_set()
    second = log.changed
    assert second is not first and not second.is_set()
    log.close()


# --- write errors -----------------------------------------------------------------------


async def test_write_error_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overhead: int
) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    log.append(OUT, b"kept\n")

    def enospc(fd: int, buffers: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "writev", enospc)
    log.append(ERR, b"lost one")  # must not raise
    assert log.error == "output log write failed: No space left on device"
    assert log.dropped_bytes == len(b"lost one")
    monkeypatch.undo()
    # Later appends are dropped and counted even though writing would work again.
    log.append(OUT, b"lost two")
    assert log.dropped_bytes == len(b"lost one") + len(b"lost two")
    assert log.data_bytes == len(b"kept\n")
    assert log.size == overhead + len(b"kept\n") == path.stat().st_size
    log.close()
    assert frames(await read_all(path, log)) == [(OUT, b"kept\n")]


async def test_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev may write less than asked; the rest of the frame still reaches the file."""
    path = tmp_path / "j.log"
    log = OutputLog(path)
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        return os.write(fd, b"".join(buffers)[:3])

    monkeypatch.setattr(os, "writev", short_writev)
    log.append(OUT, b"abcdefgh")
    monkeypatch.setattr(os, "writev", real_writev)
    log.append(ERR, b"ij")
    log.close()
    assert log.error is None
    assert frames(await read_all(path)) == [(OUT, b"abcdefgh"), (ERR, b"ij")]


async def test_write_error_mid_frame_leaves_a_readable_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    log.append(OUT, b"kept\n")

    real_write = os.write

    def partial_then_full(fd: int, buffers: list[bytes]) -> int:
        # What a filling disk does: a short write, then ENOSPC for the rest.
        return real_write(fd, b"".join(buffers)[:7])

    def enospc(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "writev", partial_then_full)
    monkeypatch.setattr(os, "write", enospc)
    log.append(OUT, b"this frame does not fit")
    monkeypatch.undo()
    assert log.error == "output log write failed: No space left on device"
    assert log.dropped_bytes == len(b"this frame does not fit")
    assert path.stat().st_size == log.size
    log.close()
    # The log's record says output was lost; the file must still be whole frames.
    try:
        got = await read_all(path, log)
    except CorruptLog as exc:
        pytest.fail(f"the failed write damaged the log: {exc}")
    assert frames(got) == [(OUT, b"kept\n")]


# --- property ---------------------------------------------------------------------------

appends = st.lists(
    st.tuples(st.sampled_from([OUT, ERR]), st.binary(max_size=300)),
    max_size=40,
)


def merged(items: list[tuple[Stream, bytes]]) -> list[Stream]:
    """The order of streams, adjacent runs of one stream (and empty data) merged."""
    order: list[Stream] = []
    for stream, data in items:
        if data and (not order or order[-1] is not stream):
            order.append(stream)
    return order


def check_same(items: list[tuple[Stream, bytes]], chunks: list[Chunk], size: int) -> None:
    got = frames(chunks)
    for stream in Stream:
        assert b"".join(d for s, d in got if s is stream) == b"".join(
            d for s, d in items if s is stream
        )
    assert merged(got) == merged(items)
    offsets = [c.next_offset for c in chunks]
    assert offsets == sorted(set(offsets))
    assert all(0 < o <= size for o in offsets)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=appends, pauses=st.lists(st.booleans(), max_size=40))
def test_property_appended_then_followed_gives_the_same(
    items: list[tuple[Stream, bytes]], pauses: list[bool]
) -> None:
    async def scenario(path: Path) -> None:
        log = OutputLog(path)
        live: list[Chunk] = []

        async def follower() -> None:
            live.extend(await read_all(path, log))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            for i, (stream, data) in enumerate(items):
                log.append(stream, data)
                if i < len(pauses) and pauses[i]:
                    await trio.lowlevel.checkpoint()
            log.close()
        check_same(items, live, log.size)
        check_same(items, await read_all(path), log.size)

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(scenario, Path(tmp) / "j.log")


# --- the cap ----------------------------------------------------------------------------


async def test_cap_keeps_what_fits_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path, cap=10)
    log.append(OUT, b"12345678")
    assert log.error is None
    log.append(ERR, b"abcd")  # only "ab" fits
    assert log.error == "output cap of 10 B reached; later output dropped"
    assert (log.data_bytes, log.dropped_bytes) == (10, 2)
    log.append(OUT, b"xyz")
    assert (log.data_bytes, log.dropped_bytes) == (10, 5)
    log.close()
    assert frames(await read_all(path)) == [(OUT, b"12345678"), (ERR, b"ab")]


async def test_cap_reached_exactly(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path, cap=4)
    log.append(OUT, b"abcd")
    assert log.error is None and log.dropped_bytes == 0
    size = log.size
    log.append(OUT, b"e")
    assert log.error is not None and log.dropped_bytes == 1
    assert log.size == size == path.stat().st_size
    log.close()
    assert frames(await read_all(path)) == [(OUT, b"abcd")]


# --- one stream, the last lines ---------------------------------------------------------

TAIL_ITEMS = [(OUT, b"a\nb\n"), (ERR, b"e1\n"), (OUT, b"c\nd")]


@pytest.mark.parametrize(
    ("only", "expected"),
    [(OUT, [(OUT, b"a\nb\n"), (OUT, b"c\nd")]), (ERR, [(ERR, b"e1\n")])],
)
async def test_only_one_stream(
    tmp_path: Path, only: Stream, expected: list[tuple[Stream, bytes]]
) -> None:
    path = tmp_path / "j.log"
    write_log(path, TAIL_ITEMS)
    got: list[Chunk] = []
    async with contextlib.aclosing(follow(path, None, only=only)) as batches:
        async for batch in batches:
            got.extend(batch)
    assert frames(got) == joined(expected)


@pytest.mark.parametrize(
    ("lines", "only", "expected"),
    [
        (1, None, [(OUT, b"d")]),
        (2, None, [(OUT, b"c\nd")]),
        (3, None, [(ERR, b"e1\n"), (OUT, b"c\nd")]),
        (4, None, [(OUT, b"b\n"), (ERR, b"e1\n"), (OUT, b"c\nd")]),
        (50, None, TAIL_ITEMS),
        (3, OUT, [(OUT, b"b\n"), (OUT, b"c\nd")]),
        (1, ERR, [(ERR, b"e1\n")]),
    ],
)
async def test_tail_lines(
    tmp_path: Path, lines: int, only: Stream | None, expected: list[tuple[Stream, bytes]]
) -> None:
    path = tmp_path / "j.log"
    write_log(path, TAIL_ITEMS)
    got: list[Chunk] = []
    async with contextlib.aclosing(follow(path, None, only=only, tail_lines=lines)) as batches:
        async for batch in batches:
            got.extend(batch)
    assert frames(got) == joined(expected)


async def test_tail_then_follow_live(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    log = OutputLog(path)
    log.append(OUT, b"old 1\nold 2\nold 3\n")
    got: list[Chunk] = []
    first = trio.Event()  # the tail's walk runs on a thread: wait for its batch itself

    async def follower() -> None:
        async with contextlib.aclosing(follow(path, log, tail_lines=1)) as batches:
            async for batch in batches:
                got.extend(batch)
                first.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await first.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert frames(got) == [(OUT, b"old 3\n")]
            log.append(ERR, b"new\n")
            log.close()
    assert frames(got) == [(OUT, b"old 3\n"), (ERR, b"new\n")]


def test_a_tail_walks_back_a_bounded_number_of_frames(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = OutputLog(path)
    log.append(Stream.STDOUT, b"first line\n")
    for _ in range(5000):
        log.append(Stream.STDOUT, b"x")  # one long last line, a byte a frame
    log.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        # The last line starts after the first frame's newline.
        assert tail_start(fd, end, 1, None) == (0, len(b"first line\n"))
        offset, skip = tail_start(fd, end, 1, None, max_frames=100)
        assert (end - offset, skip) == (100 * (OVERHEAD + 1), 0)  # stopped after 100 frames
        assert is_frame_boundary(path, offset)
    finally:
        os.close(fd)


def test_a_tail_reads_frames_larger_than_its_block(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "TAIL_BLOCK", 64)
    path = tmp_path / "log"
    log = OutputLog(path)
    log.append(Stream.STDOUT, b"a\n" + b"b" * 500 + b"\nc\n")
    log.append(Stream.STDERR, b"e" * 300)
    log.append(Stream.STDOUT, b"d" * 200 + b"\n")
    log.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        start, skip = tail_start(fd, os.fstat(fd).st_size, 3, Stream.STDOUT)
        data = os.pread(fd, 600, start + output.HEADER.size)
        assert data[skip:].startswith(b"b" * 500 + b"\n")
    finally:
        os.close(fd)


def test_the_data_size_of_a_log_cut_inside_a_frame(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "TAIL_BLOCK", 32)
    path = tmp_path / "log"
    log = OutputLog(path)
    for n in (5, 100, 7):
        log.append(Stream.STDOUT, b"z" * n)
    log.close()
    assert output.data_size(path) == 112
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3)  # a crash in the middle of the last frame
    assert output.data_size(path) == 105


async def test_a_follower_takes_no_more_than_its_reader_has_room_for(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT, b"a" * 100), (OUT, b"b" * 100), (OUT, b"c" * 100)])
    asked: list[int] = []

    async def room() -> int:
        asked.append(len(asked))
        return 150  # a window that takes one and a half frames

    batches = []
    async with contextlib.aclosing(follow(path, None, room=room)) as follower:
        async for batch in follower:
            batches.append([c.data[:1] for c in batch])
    assert batches == [[b"a"], [b"b"], [b"c"]]  # one frame each: the second would not fit
    assert len(asked) == 3  # asked before each read, not after the end


async def test_a_follower_of_one_stream_steps_over_the_other_without_copying_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.log"
    write_log(path, [(OUT, b"x" * 1000)] * 50 + [(ERR, b"err\n")])
    chunks, used = parse_frames(path.read_bytes(), 0, only=ERR)
    assert [(c.stream, c.data) for c in chunks] == [(ERR, b"err\n")]
    assert used == path.stat().st_size
