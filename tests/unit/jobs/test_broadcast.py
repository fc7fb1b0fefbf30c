"""The live broadcast of a running job's output: the log writer never loses a byte, and every
follower gets every byte once, in order, whether it keeps up, stalls, or joins late.

The writer's disk writes are paced by the tests (``Pace``) instead of a worker thread, and time
is trio's MockClock, so every interleaving here is deterministic: a stall of 100 s costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobd.jobs.broadcast
import jobd.jobs.output
from jobd.jobs.broadcast import LIVE_BUFFER, WRITER_QUEUE, Broadcast, Subscription
from jobd.jobs.output import Chunk, Frames, OutputLog, Stream, follow, parse_frames

OUT, ERR = Stream.STDOUT, Stream.STDERR


class Pace:
    """Writes batches on the trio thread, each after ``delays`` (in turn; 0 when run out), or
    only once ``gate`` is set."""

    def __init__(self, log: OutputLog, delays: list[float] | None = None) -> None:
        self.log = log
        self.delays = list(delays or [])
        self.gate: trio.Event | None = None
        self.batches: list[int] = []  # the reads in each batch written
        self.fail: OSError | None = None

    async def __call__(self, batch: list[Frames]) -> OSError | None:
        if self.gate is not None:
            await self.gate.wait()
        await trio.sleep(self.delays.pop(0) if self.delays else 0)
        self.batches.append(len(batch))
        if self.fail is not None:
            return self.fail
        return self.log.write(batch)


def make(tmp_path: Path, delays: list[float] | None = None) -> tuple[Broadcast, Pace]:
    log = OutputLog(tmp_path / "job.log")
    pace = Pace(log, delays)
    return Broadcast(log, pace), pace


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def merged(items: list[tuple[Stream, bytes]]) -> list[tuple[Stream, bytes]]:
    """Runs of one stream joined: what a follower must see, however the bytes were cut."""
    out: list[tuple[Stream, bytes]] = []
    for stream, data in items:
        if not data:
            continue
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + data)
        else:
            out.append((stream, data))
    return out


def on_disk(path: Path) -> list[tuple[Stream, bytes]]:
    chunks, used = parse_frames(path.read_bytes(), 0, max_frames=1 << 30)
    assert used == path.stat().st_size, "the log ends inside a frame"
    return merged([(c.stream, c.data) for c in chunks])


async def collect(bc: Broadcast, into: list[Chunk], stall: Callable[[int], float] = lambda i: 0,
                  only: Stream | None = None) -> None:
    """Follow from 0 to the end; after the i-th batch, sleep ``stall(i)`` (a slow client)."""
    i = 0
    async for batch in follow(bc.log.path, bc, 0, only=only):
        into.extend(batch)
        await trio.sleep(stall(i))
        i += 1


def data_of(chunks: list[Chunk]) -> list[tuple[Stream, bytes]]:
    offsets = [c.next_offset for c in chunks]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), "out of order"
    return merged([(c.stream, c.data) for c in chunks])


def count_cuts(monkeypatch: pytest.MonkeyPatch) -> list[Subscription]:
    cuts: list[Subscription] = []
    cut_off = Subscription._cut_off

    def spy(self: Subscription) -> None:
        cut_off(self)
        assert self.queued == 0, "a cut-off stream still holds data"
        cuts.append(self)

    monkeypatch.setattr(Subscription, "_cut_off", spy)
    return cuts


def test_a_follower_that_keeps_up_gets_every_chunk_live(tmp_path: Path) -> None:
    bc, _ = make(tmp_path)
    sent = [(OUT, b"a" * 1000), (ERR, b"e" * 10), (OUT, b"b" * 70_000), (OUT, b"")]
    got: list[Chunk] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(collect, bc, got)
            await trio.sleep(1)  # the follower has read the (empty) file and joined
            assert bc._subscribers
            for stream, data in sent:
                await bc.send(stream, data)
            bc.close_input()
        assert bc.closed and bc.written == bc.size == tmp_path.joinpath("job.log").stat().st_size

    run(main)
    assert data_of(got) == merged(sent) == on_disk(bc.log.path)
    # The empty read's frame is in the log, and is no chunk: as a reader of the file sees it.
    assert got[-1].next_offset == bc.size - jobd.jobs.output.OVERHEAD


def test_a_stalled_follower_is_cut_off_and_never_slows_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuts = count_cuts(monkeypatch)
    bc, _ = make(tmp_path)
    read = LIVE_BUFFER // 4
    sent = [(OUT if i % 3 else ERR, bytes([i]) * read) for i in range(24)]  # 6 times that
    fast: list[Chunk] = []
    slow: list[Chunk] = []
    sent_by: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(collect, bc, fast)
            nursery.start_soon(collect, bc, slow, lambda i: 100.0 if i == 0 else 0)
            await trio.sleep(1)
            start = trio.current_time()
            for stream, data in sent:
                await bc.send(stream, data)
            sent_by.append(trio.current_time() - start)
            bc.close_input()

    run(main)
    # The job's reads went through at once, although one follower slept 100 s...
    assert sent_by == [0.0]
    # ...which was cut off, held nothing after, and still got every byte once, in order.
    assert len(cuts) >= 1
    assert data_of(slow) == data_of(fast) == merged(sent) == on_disk(bc.log.path)


def test_a_cut_off_follower_rejoins_live_once_it_has_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuts = count_cuts(monkeypatch)
    joins: list[int] = []
    join = Broadcast.join

    def spy(self: Broadcast, offset: int) -> Subscription | None:
        joined = join(self, offset)
        if joined is not None:
            joins.append(offset)
        return joined

    monkeypatch.setattr(Broadcast, "join", spy)
    bc, _ = make(tmp_path)
    got: list[Chunk] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(collect, bc, got, lambda i: 50.0 if i == 0 else 0)
            await trio.sleep(1)
            for i in range(8):  # twice what it may queue, while it sleeps: it is cut off
                await bc.send(OUT, bytes([i]) * (LIVE_BUFFER // 4))
            await trio.sleep(100)  # it reads the log and joins again
            await bc.send(ERR, b"live again")
            await trio.sleep(1)
            bc.close_input()

    run(main)
    assert len(cuts) == 1
    assert len(joins) == 2 and joins[1] == bc.size - (len(b"live again") + 9)
    assert got[-1] == Chunk(ERR, b"live again", bc.size)
    assert data_of(got) == on_disk(bc.log.path)


def test_a_late_joiner_gets_what_is_not_on_disk_yet_from_memory(tmp_path: Path) -> None:
    bc, pace = make(tmp_path)
    pace.gate = trio.Event()  # the disk is stuck: nothing is written
    got: list[Chunk] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            await bc.send(OUT, b"one ")
            await bc.send(ERR, b"two ")
            nursery.start_soon(collect, bc, got)
            await trio.sleep(1)
            assert bc.written == 0 and data_of(got) == [(OUT, b"one "), (ERR, b"two ")]
            await bc.send(OUT, b"three")
            await trio.sleep(1)
            assert data_of(got)[-1] == (OUT, b"three")
            assert pace.gate is not None
            pace.gate.set()
            bc.close_input()

    run(main)
    assert data_of(got) == on_disk(bc.log.path) == [(OUT, b"one "), (ERR, b"two "), (OUT, b"three")]


def test_the_writer_holds_the_pumps_back_and_keeps_every_byte(tmp_path: Path) -> None:
    bc, pace = make(tmp_path)
    pace.gate = trio.Event()
    sends_done = 0

    async def pump() -> None:
        nonlocal sends_done
        for i in range(40):
            await bc.send(OUT, b"%d," % i)
            sends_done += 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(pump)
            await trio.sleep(10)
            # One read with the stuck writer, WRITER_QUEUE queued behind it, then the pump waits.
            assert sends_done == WRITER_QUEUE + 1
            assert pace.gate is not None
            pace.gate.set()
            await trio.sleep(1)
            assert sends_done == 40
            bc.close_input()

    run(main)
    assert on_disk(bc.log.path) == [(OUT, b"".join(b"%d," % i for i in range(40)))]
    assert max(pace.batches) <= WRITER_QUEUE + 1 and len(pace.batches) < 40  # batched


def test_a_join_waits_for_the_writer_when_it_is_far_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobd.jobs.broadcast, "WRITER_QUEUE", 64)
    bc, pace = make(tmp_path)
    pace.gate = trio.Event()
    got: list[Chunk] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            for i in range(6):  # framed, none on disk: more than a stream may hold
                await bc.send(OUT, bytes([i]) * (LIVE_BUFFER // 4))
            assert bc.join(0) is None
            nursery.start_soon(collect, bc, got)
            await trio.sleep(5)
            assert got == []
            assert pace.gate is not None
            pace.gate.set()
            await trio.sleep(1)
            bc.close_input()

    run(main)
    assert data_of(got) == on_disk(bc.log.path)
    assert sum(len(c.data) for c in got) == 6 * (LIVE_BUFFER // 4)


def test_a_failed_write_ends_the_log_where_the_disk_does(tmp_path: Path) -> None:
    bc, pace = make(tmp_path)
    got: list[Chunk] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            await bc.send(OUT, b"kept")
            await trio.sleep(1)
            pace.fail = OSError(28, "No space left on device")
            await bc.send(OUT, b"lost")
            await trio.sleep(1)
            await bc.send(OUT, b"dropped")  # after the failure: counted, never framed
            nursery.start_soon(collect, bc, got)
            await trio.sleep(1)
            bc.close_input()

    run(main)
    assert on_disk(bc.log.path) == [(OUT, b"kept")]
    assert (bc.log.data_bytes, bc.log.dropped_bytes) == (4, 4 + 7)
    assert bc.log.error == "output log write failed: No space left on device"
    assert bc.size == bc.written == bc.log.path.stat().st_size
    assert data_of(got) == [(OUT, b"kept")]


def test_a_cancelled_pump_leaves_no_hole_in_the_log(tmp_path: Path) -> None:
    bc, pace = make(tmp_path)
    pace.gate = trio.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(open_gate_at, 10)
            with trio.move_on_after(5) as waited:
                for i in range(20):
                    await bc.send(OUT, b"<%d>" % i)
            # Cancelled at 5 s while it waited on the writer, after framing its read: that
            # read is still written (at 10 s), and the pump stops at its next send.
            assert waited.cancelled_caught and trio.current_time() >= 10
            bc.close_input()

    async def open_gate_at(when: float) -> None:
        await trio.sleep_until(when)
        assert pace.gate is not None
        pace.gate.set()

    run(main)
    assert bc.size == bc.written == bc.log.path.stat().st_size
    assert on_disk(bc.log.path) == [(OUT, b"".join(b"<%d>" % i for i in range(WRITER_QUEUE + 2)))]


def test_two_pumps_reach_the_disk_in_the_order_followers_saw(tmp_path: Path) -> None:
    bc, _ = make(tmp_path, delays=[0.5] * 100)
    got: list[Chunk] = []

    async def pump(stream: Stream, tag: bytes) -> None:
        for i in range(30):
            await bc.send(stream, tag + b"%d " % i)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(collect, bc, got)
            await trio.sleep(1)
            async with trio.open_nursery() as pumps:
                pumps.start_soon(pump, OUT, b"o")
                pumps.start_soon(pump, ERR, b"e")
            bc.close_input()

    run(main)
    assert data_of(got) == on_disk(bc.log.path)
    assert {s for s, _ in on_disk(bc.log.path)} == {OUT, ERR}


def test_a_follower_that_leaves_is_dropped_and_holds_nothing(tmp_path: Path) -> None:
    bc, _ = make(tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            joined = bc.join(0)
            assert joined is not None
            await bc.send(OUT, b"x" * 1000)
            joined.close()
            assert joined.queued == 0
            await bc.send(OUT, b"y")
            assert not bc._subscribers
            bc.close_input()

    run(main)


# --- every interleaving: hypothesis -----------------------------------------------------------

follower = st.tuples(
    st.integers(0, 12),  # joins after this many reads were sent
    st.lists(st.sampled_from([0, 0, 0.01, 0.5, 30]), max_size=12),  # stalls after each batch
    st.sampled_from([None, OUT, ERR]),  # only one stream?
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reads=st.lists(st.tuples(st.sampled_from([OUT, ERR]), st.integers(0, 5000)), max_size=12),
    pump_pauses=st.lists(st.sampled_from([0, 0, 0.01, 1]), max_size=12),
    write_delays=st.lists(st.sampled_from([0, 0, 0.02, 2, 40]), max_size=12),
    followers=st.lists(follower, min_size=1, max_size=4),
)
def test_every_follower_gets_every_byte_once_in_order_whatever_the_timing(
    tmp_path_factory: pytest.TempPathFactory,
    reads: list[tuple[Stream, int]],
    pump_pauses: list[float],
    write_delays: list[float],
    followers: list[tuple[int, list[float], Stream | None]],
) -> None:
    # Small frames, reads and live buffers: a few KiB cross every limit the real sizes have.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobd.jobs.output, "MAX_FRAME_DATA", 1500)
        patch.setattr(jobd.jobs.output, "READ_SIZE", 4000)
        patch.setattr(jobd.jobs.broadcast, "LIVE_BUFFER", 6000)
        patch.setattr(jobd.jobs.broadcast, "WRITER_QUEUE", 2)
        path = tmp_path_factory.mktemp("log")
        bc, _ = make(path, write_delays)
        sent = [(stream, bytes([65 + i % 26]) * size) for i, (stream, size) in enumerate(reads)]
        got: list[list[Chunk]] = [[] for _ in followers]
        reads_sent = [trio.Event() for _ in range(len(sent) + 1)]

        async def one(i: int, after: int, stalls: list[float], only: Stream | None) -> None:
            await reads_sent[min(after, len(sent))].wait()
            await collect(bc, got[i], lambda n: stalls[n] if n < len(stalls) else 0, only)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(bc.run)
                for i, (after, stalls, only) in enumerate(followers):
                    nursery.start_soon(one, i, after, stalls, only)
                reads_sent[0].set()
                for n, (stream, data) in enumerate(sent):
                    await trio.sleep(pump_pauses[n] if n < len(pump_pauses) else 0)
                    await bc.send(stream, data)
                    reads_sent[n + 1].set()
                bc.close_input()
                assert math.isfinite(trio.current_time())

        run(main)
        assert on_disk(bc.log.path) == merged(sent)
        for (_, _, only), chunks in zip(followers, got, strict=True):
            want = [(s, d) for s, d in merged(sent) if only in (None, s)]
            assert merged(data_of(chunks)) == merged(want)


def test_a_client_with_a_small_window_is_handed_a_frame_at_a_time(tmp_path: Path) -> None:
    # A live read is up to 1 MiB: a stream whose client opens its window a little at a time
    # would hold all of it. It reads those bytes from the file instead, a frame per message.
    bc, _ = make(tmp_path)
    sent = [(OUT, bytes([i]) * 300_000) for i in range(3)]
    batches: list[list[Chunk]] = []

    async def room() -> int:
        return 1000

    async def reader() -> None:
        async for batch in follow(bc.log.path, bc, 0, room=room):
            batches.append(batch)
            await trio.sleep(0.1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            nursery.start_soon(reader)
            await trio.sleep(1)
            for stream, data in sent:
                await bc.send(stream, data)
            bc.close_input()

    run(main)
    largest = max(sum(len(c.data) for c in batch) for batch in batches)
    assert largest <= jobd.jobs.output.MAX_FRAME_DATA
    assert data_of([c for batch in batches for c in batch]) == merged(sent)


def test_a_follower_resumes_at_an_offset_not_on_disk_yet(tmp_path: Path) -> None:
    # A client that got a chunk live and reconnects at its next_offset may name a place the
    # writer has not reached: it is a place a chunk ends (the manager checks that much in
    # memory, not on disk), and the follower waits for the disk, then goes on from there.
    bc, pace = make(tmp_path)
    pace.gate = trio.Event()
    got: list[Chunk] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bc.run)
            await bc.send(OUT, b"a" * 100)
            first_end = bc.size
            await bc.send(ERR, b"b" * 50)
            assert bc.written == 0
            assert bc.is_pending_boundary(first_end) and bc.is_pending_boundary(bc.size)
            assert not bc.is_pending_boundary(first_end - 1)

            async def resume() -> None:
                async for batch in follow(bc.log.path, bc, first_end):
                    got.extend(batch)

            nursery.start_soon(resume)
            await trio.sleep(1)
            assert got == []  # nothing it could read yet: it waits, holding nothing
            assert pace.gate is not None
            pace.gate.set()
            await trio.sleep(1)
            bc.close_input()

    run(main)
    assert data_of(got) == [(ERR, b"b" * 50)]
