"""A job's output log: one append-only file of frames, and followers that read it.

Each frame is ``stream (1 byte) | length (4 bytes) | data | length (4 bytes)``, big endian:
stdout and stderr stay apart and keep their order of arrival, bytes are stored exactly as the
process wrote them, and the trailing length lets ``tail`` walk back from the end.

The log is also the broadcast: pumps append with plain ``os.write`` and then wake followers by
setting and replacing a ``trio.Event``. Every follower reads the file from its own offset at its
own pace, so a slow follower costs one read buffer, never the job's whole output, and never
delays the job, the pumps or other followers.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from jobd.jobs.diskuse import DiskUse
from jobd.model.errors import DataLoss
from jobd.model.units import format_size

log = logging.getLogger(__name__)

HEADER = struct.Struct(">BI")
TRAILER = struct.Struct(">I")
OVERHEAD = HEADER.size + TRAILER.size
# A read of a job's pipe is cut into frames of at most this much: what a stream whose client
# reads a byte at a time holds at most (a frame it cannot cut, three times over in protobuf's
# and grpclib's copies: ~200 KiB)...
MAX_FRAME_DATA = 64 * 1024
# ...and a follower's read holds several whole frames: a client that keeps up gets them in
# one message (fewer messages cost the daemon less CPU per byte).
READ_SIZE = 1024 * 1024


class Stream(enum.IntEnum):
    STDOUT = 1
    STDERR = 2


@dataclass(frozen=True)
class Chunk:
    stream: Stream
    data: bytes
    next_offset: int


class CorruptLog(DataLoss):
    """The log file ends inside a frame, or a frame is not what it says."""


@dataclass(frozen=True)
class Frames:
    """One read of a job's pipe, framed: its place in the log is fixed when it is framed."""

    stream: Stream
    data: bytes | bytearray  # what is kept of the read (a cap may have cut it)
    parts: list[bytes | bytearray | memoryview]  # header, data, trailer, for each frame
    start: int  # the log offset of its first frame
    end: int  # the log offset after its last frame

    @property
    def frames(self) -> int:
        return len(self.parts) // 3


# os.writev takes at most IOV_MAX (1024 on Linux) buffers: three per frame.
WRITEV_PARTS = 1020


class OutputLog:
    """The log file of one job. ``frame`` (on the event loop, nothing there waits) gives each
    read its place and counts it; ``write`` puts frames on disk (on a worker thread, for a
    running job: see jobd.jobs.broadcast); ``commit`` records what reached the disk and wakes the
    file readers. ``append`` is all three at once, for a log written in one go."""

    def __init__(self, path: Path, cap: int | None = None, owner: str = "",
                 use: DiskUse | None = None) -> None:
        self.path = path
        self.cap = cap
        # Whose budget this log's output counts against, on the state directory's disk.
        self.owner = owner
        self.use = use
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = 0  # the end of what has been framed: where the next frame goes
        self.written = 0  # the end of what is on disk: what file readers may read
        self.data_bytes = 0
        self._data_written = 0
        self.dropped_bytes = 0
        self.error: str | None = None
        self.closed = False
        self._changed = trio.Event()

    def frame(self, stream: Stream, data: bytes | bytearray) -> Frames | None:
        """``data`` as frames of at most MAX_FRAME_DATA (followers read whole frames), after
        the cap and the owner's disk budget; None when none of it is kept."""
        if self.closed:
            raise RuntimeError("append to a closed output log")
        if self.error is not None:
            self.dropped_bytes += len(data)
            return None
        if self.cap is not None and self.data_bytes + len(data) > self.cap:
            keep = self.cap - self.data_bytes
            self.dropped_bytes += len(data) - keep
            data = data[:keep]
            # The job keeps running and is never blocked; it only loses what is past the cap.
            self.error = f"output cap of {format_size(self.cap)} reached; later output dropped"
            log.warning("%s: %s", self.path.name, self.error)
            if not data:
                return None
        if self.use is not None:
            granted, why = self.use.grant(self.owner, len(data))
            if granted < len(data):
                self.dropped_bytes += len(data) - granted
                data = data[:granted]
                self.error = why
                log.warning("%s: %s", self.path.name, why)
                if not data:
                    return None
        length = len(data)
        parts: list[bytes | bytearray | memoryview] = []
        view = memoryview(data)
        for start in range(0, max(length, 1), MAX_FRAME_DATA):  # b"": one empty frame
            piece = view[start : start + MAX_FRAME_DATA]
            parts += [HEADER.pack(stream, len(piece)), piece, TRAILER.pack(len(piece))]
        frames = Frames(stream, data, parts, self.size, self.size + len(parts) // 3 * OVERHEAD
                        + length)
        if self.use is not None:  # the disk holds the framing too
            self.use.count(self.owner, frames.frames * OVERHEAD)
        self.size = frames.end
        self.data_bytes += length
        return frames

    def write(self, batch: list[Frames]) -> OSError | None:
        """Put ``batch`` (framed in order, following what is written) on disk. Safe on a
        worker thread: nothing else touches the file meanwhile. A failed write is cut off
        again, so that what the log holds stays readable."""
        if self.error is not None and batch[0].start >= self.size:
            return None  # framed before a failed write, and dropped with it (see commit)
        parts = [part for frames in batch for part in frames.parts]
        try:
            for i in range(0, len(parts), WRITEV_PARTS):
                self._write_all(parts[i : i + WRITEV_PARTS])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.written)
            return exc
        return None

    def commit(self, batch: list[Frames], failure: OSError | None) -> None:
        """Record what ``write`` did with ``batch``, and wake the file readers."""
        if failure is None and batch[0].start == self.written:
            self.written = batch[-1].end
            self._data_written += sum(len(f.data) for f in batch)
        elif failure is not None:
            # The job must not be blocked or killed because its log cannot grow: its pipes
            # are still drained, and what is lost is counted and said in its record. All
            # that was framed after what is on disk is lost, the batches queued behind this
            # one too (their writes are skipped): the log ends where the disk does.
            self.error = f"output log write failed: {os.strerror(failure.errno or errno.EIO)}"
            log.error("%s: %s", self.path.name, self.error)
            self.dropped_bytes += self.data_bytes - self._data_written
            if self.use is not None:
                self.use.released(self.owner, self.size - self.written)
            self.data_bytes, self.size = self._data_written, self.written
        self._wake()

    def append(self, stream: Stream, data: bytes | bytearray) -> None:
        """Frame and write ``data`` at once, on the calling thread."""
        frames = self.frame(stream, data)
        if frames is not None:
            self.commit([frames], self.write([frames]))

    def _write_all(self, parts: list[bytes | bytearray | memoryview]) -> None:
        total = sum(len(p) for p in parts)
        written = os.writev(self._fd, parts)
        if written != total:  # regular files rarely write short; finish the frame if they do
            rest = b"".join(parts)[written:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)
            self._wake()

    def _wake(self) -> None:
        # Followers hold the current event; a fresh one is cheap.
        self._changed.set()
        self._changed = trio.Event()

    @property
    def changed(self) -> trio.Event:
        return self._changed

    # A log written in one go has nothing in memory to offer a follower: see Broadcast.

    def join(self, offset: int) -> None:
        return None

    async def wait_written(self, offset: int) -> None:
        await trio.lowlevel.checkpoint()


# A follower's batch holds at most this many frames: a log of tiny frames (a job writing a byte
# at a time) costs each step of the event loop a bounded parse and message, not a megabyte's.
BATCH_FRAMES = 2048


def parse_frames(buf: bytes, offset: int, max_frames: int = BATCH_FRAMES,
                 max_bytes: int | None = None,
                 only: Stream | None = None) -> tuple[list[Chunk], int]:
    """Whole frames at the start of ``buf`` (read at ``offset``), at most ``max_frames`` of
    them and, past the first, at most ``max_bytes`` of data, and the bytes they span. With
    ``only``, the other stream's frames are stepped over (counted in the span, never copied).

    Consecutive frames of one stream come out as one chunk (its ``next_offset`` the end of its
    last frame): a log of tiny frames (a job writing a byte at a time) replays as a few large
    messages, not one per byte for the client to decode.
    """
    chunks: list[Chunk] = []
    pieces: list[memoryview] = []  # the run of frames of one stream being gathered
    run_stream = -1
    run_end = 0
    pos = 0
    frames = 0
    data_bytes = 0
    view = memoryview(buf)
    while len(buf) - pos >= HEADER.size and frames < max_frames:
        stream, length = HEADER.unpack_from(buf, pos)
        if stream not in (Stream.STDOUT, Stream.STDERR) or length > MAX_FRAME_DATA:
            raise CorruptLog(f"no frame starts at offset {offset + pos}")
        end = pos + HEADER.size + length + TRAILER.size
        if end > len(buf):
            break
        if TRAILER.unpack_from(buf, end - TRAILER.size)[0] != length:
            raise CorruptLog(f"frame at offset {offset + pos} is damaged")
        if only is not None and stream != only:
            pos = end
            continue
        if frames and max_bytes is not None and data_bytes + length > max_bytes:
            break
        if stream != run_stream and pieces:
            chunks.append(Chunk(Stream(run_stream), b"".join(pieces), offset + run_end))
            pieces = []
        run_stream, run_end = stream, end
        pieces.append(view[pos + HEADER.size : end - TRAILER.size])
        data_bytes += length
        frames += 1
        pos = end
    if pieces:
        chunks.append(Chunk(Stream(run_stream), b"".join(pieces), offset + run_end))
    return chunks, pos


def is_frame_boundary(path: Path, offset: int) -> bool:
    """Whether a frame ends at ``offset`` (so that one can start there)."""
    if offset == 0:
        return True
    if offset < OVERHEAD:
        return False
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        (length,) = TRAILER.unpack(os.pread(fd, TRAILER.size, offset - TRAILER.size))
        start = offset - OVERHEAD - length
        if start < 0 or length > MAX_FRAME_DATA:
            return False
        stream, head_length = HEADER.unpack(os.pread(fd, HEADER.size, start))
    return head_length == length and stream in (Stream.STDOUT, Stream.STDERR)


# A tail walks back at most this many frames (read in large blocks; ~25 ms here): a last line
# longer than that starts where the walk stopped. Bounded, and run on a worker thread, so that
# no log can make a tail stall the daemon or keep its client waiting.
TAIL_FRAMES = 32768
TAIL_BLOCK = 1 << 20
NEWLINE = ord("\n")


def tail_start(fd: int, end: int, lines: int, only: Stream | None,
               max_frames: int = TAIL_FRAMES) -> tuple[int, int]:
    """Where the last ``lines`` lines before ``end`` begin: (frame offset, bytes to skip).

    Walks frames backwards by their trailers, reading the file in blocks of ``TAIL_BLOCK``,
    for at most ``max_frames`` frames (then the frame it stopped at is where it starts).
    """
    pos, newlines, at_end, frames = end, 0, True, 0
    block, block_start = b"", end  # the file's bytes [block_start, block_start + len(block))
    while pos > 0 and lines > 0:
        if frames >= max_frames:
            return pos, 0
        if pos < OVERHEAD:
            raise CorruptLog(f"damaged frame before offset {pos}")
        if pos - TRAILER.size < block_start:
            block_start = max(0, pos - TAIL_BLOCK)
            block = os.pread(fd, pos - block_start, block_start)
        (length,) = TRAILER.unpack_from(block, pos - TRAILER.size - block_start)
        start = pos - OVERHEAD - length
        if start < 0 or length > MAX_FRAME_DATA:
            raise CorruptLog(f"damaged frame before offset {pos}")
        if start < block_start:  # the frame begins before the block: read back to it
            block_start = max(0, min(start, pos - TAIL_BLOCK))
            block = os.pread(fd, pos - block_start, block_start)
        stream, head_length = HEADER.unpack_from(block, start - block_start)
        if head_length != length:
            raise CorruptLog(f"frame at offset {start} is damaged")
        if only is None or stream == only:
            first = start + HEADER.size - block_start  # the frame's data, in the block
            cut = first + length
            if at_end and length and block[cut - 1] == NEWLINE:
                cut -= 1  # the newline that ends the last line starts no line
            at_end = at_end and not length
            while (cut := block.rfind(b"\n", first, cut)) >= 0:
                newlines += 1
                if newlines == lines:
                    return start, cut - first + 1
        pos = start
        frames += 1
    return 0, 0


def data_size(path: Path) -> int:
    """The bytes of output the log's whole frames hold (a crash may have cut its last one),
    by walking its headers forwards in large blocks: for a job recovered after a crash."""
    total = 0
    with open(path, "rb", buffering=0) as f:
        fd, pos = f.fileno(), 0
        size = os.fstat(fd).st_size
        block, block_start = b"", 0
        while pos + HEADER.size <= size:
            if pos + HEADER.size > block_start + len(block):
                block, block_start = os.pread(fd, TAIL_BLOCK, pos), pos
            _, length = HEADER.unpack_from(block, pos - block_start)
            if pos + OVERHEAD + length > size:
                break
            total += length
            pos += OVERHEAD + length
    return total


class Joined(Protocol):
    """A follower's place in a live broadcast (jobd.jobs.broadcast.Subscription)."""

    cut: bool

    async def receive(self) -> Chunk: ...

    def receive_nowait(self) -> Chunk: ...

    def close(self) -> None: ...


class Live(Protocol):
    """The log of a job that may still write: an OutputLog, or a running job's Broadcast."""

    @property
    def size(self) -> int: ...

    @property
    def written(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def changed(self) -> trio.Event: ...

    def join(self, offset: int) -> Joined | None: ...

    async def wait_written(self, offset: int) -> None: ...


async def follow(
    path: Path,
    live: Live | None,
    offset: int = 0,
    *,
    only: Stream | None = None,
    tail_lines: int = 0,
    no_follow: bool = False,
    room: Callable[[], Awaitable[int]] | None = None,
) -> AsyncGenerator[list[Chunk], None]:
    """Every chunk from ``offset`` on; with ``live``, wait for more until the log closes.

    The log file is read from ``offset`` to what is on disk; there, a live broadcast is
    joined, and its chunks are taken as they come, until the output ends, or until this
    follower falls behind and is cut off: then it reads the file again from where it is.

    ``offset`` must be 0 or a ``next_offset`` handed out before: anything else is not a frame
    boundary and is reported as a damaged log. ``tail_lines`` starts that many lines before
    the end instead. ``no_follow`` stops at the end there is now. Batches may be empty when
    ``only`` filters a whole read out. ``room``: awaited before each batch is read, the most
    data the reader can take now (a stream's flow-control window): a batch holds no more than
    that (but one whole frame: a live read larger than both is read from the file instead),
    so a reader that takes nothing makes the follower wait before it reads, holding no data.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CorruptLog(f"output log {path.name} is missing") from None
    try:
        skip = 0
        if live is not None and (tail_lines or no_follow):
            await live.wait_written(live.size)  # what there is now, all of it on disk
        end = live.written if live is not None else os.fstat(fd).st_size
        if tail_lines:  # proportional to the log: off the event loop (bounded, too)
            offset, skip = await trio.to_thread.run_sync(tail_start, fd, end, tail_lines, only)
        if no_follow:
            live = None  # what was there when we started is all we read
        file_until = 0  # read the file, not the broadcast, up to here
        while True:
            # Take the event and the closed flag before reading: whatever is written after
            # the read sets this very event, so no wake-up is lost.
            changed = live.changed if live is not None else None
            closed = live is None or live.closed
            current = live.written if live is not None else end
            want = await room() if room is not None and current > offset else None
            # Never past what is on disk: the writer's thread may be in the middle of a frame.
            current = live.written if live is not None else end
            buf = os.pread(fd, max(0, min(READ_SIZE, current - offset)), offset)
            chunks, used = parse_frames(buf, offset, max_bytes=want, only=only)
            if used:
                offset += used
                if skip and chunks:
                    first = chunks[0]
                    chunks[0] = Chunk(first.stream, first.data[skip:], first.next_offset)
                    skip = 0
                batch = [c for c in chunks if (only is None or c.stream == only) and c.data]
                # Hold nothing while suspended: a stalled follower costs its batch, once.
                buf, chunks = b"", []
                yield batch
                del batch
                continue
            if closed:
                if buf:
                    raise CorruptLog(f"output log ends inside a frame at offset {offset}")
                return
            assert live is not None and changed is not None
            joined = live.join(offset) if offset >= file_until else None
            if joined is None:
                await changed.wait()
                continue
            try:
                while True:
                    want = await room() if room is not None else READ_SIZE
                    try:
                        got = [await joined.receive()]
                    except trio.EndOfChannel:
                        break
                    taken = len(got[0].data)
                    if taken > want and taken > MAX_FRAME_DATA:
                        # A client that takes less than a read would have this stream hold
                        # all of it: the file hands it a frame at a time instead.
                        file_until = got[0].next_offset
                        joined.cut = True
                        break
                    while taken < min(want, READ_SIZE):
                        try:
                            got.append(joined.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        taken += len(got[-1].data)
                    offset = got[-1].next_offset
                    batch = [c for c in got if (only is None or c.stream == only) and c.data]
                    got = []
                    yield batch
                    del batch
            finally:
                joined.close()
            if not joined.cut:
                return  # the output has ended, and every byte of it was taken
    finally:
        os.close(fd)
