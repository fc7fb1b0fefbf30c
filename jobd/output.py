"""A job's output log: one append-only file of frames, and followers that read it.

Each frame is ``stream (1 byte) | length (4 bytes, big endian) | data``: stdout and stderr stay
apart and keep their order of arrival, and bytes are stored exactly as the process wrote them.

The log is also the broadcast: pumps append with plain ``os.write`` and then wake followers by
setting and replacing a ``trio.Event``. Every follower reads the file from its own offset at its
own pace, so a slow follower costs one read buffer, never the job's whole output, and never
delays the job, the pumps or other followers.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from jobd.errors import DataLoss

log = logging.getLogger(__name__)

FRAME = struct.Struct(">BI")
# The pumps read at most this much at a time, so a frame is never larger than this...
MAX_FRAME_DATA = 256 * 1024
# ...and a follower's read always holds at least one whole frame.
READ_SIZE = 4 * MAX_FRAME_DATA


class Stream(enum.IntEnum):
    STDOUT = 1
    STDERR = 2


@dataclass(frozen=True)
class Chunk:
    stream: Stream
    data: bytes
    next_offset: int


class CorruptLog(DataLoss):
    """The log file ends inside a frame or holds an unknown frame type."""


class OutputLog:
    """The writing side, owned by one job. Sync methods: nothing here waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = 0
        self.data_bytes = 0
        self.dropped_bytes = 0
        self.error: str | None = None
        self.closed = False
        self._changed = trio.Event()

    def append(self, stream: Stream, data: bytes | bytearray) -> None:
        if self.closed:
            raise RuntimeError("append to a closed output log")
        if self.error is not None:
            self.dropped_bytes += len(data)
            return
        frame: list[bytes | bytearray] = [FRAME.pack(stream, len(data)), data]
        try:
            self._write_all(frame)
        except OSError as exc:
            # The job must not be blocked or killed because its log cannot grow: keep draining
            # its pipes, count what is lost, and say so in its record.
            self.error = f"output log write failed: {os.strerror(exc.errno or errno.EIO)}"
            log.error("%s: %s", self.path, self.error)
            self.dropped_bytes += len(data)
            return
        self.size += FRAME.size + len(data)
        self.data_bytes += len(data)
        self._wake()

    def _write_all(self, parts: list[bytes | bytearray]) -> None:
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


def parse_frames(buf: bytes, offset: int) -> tuple[list[Chunk], int]:
    """Whole frames at the start of ``buf`` (read at ``offset``), and the bytes they span."""
    chunks: list[Chunk] = []
    pos = 0
    view = memoryview(buf)
    while len(buf) - pos >= FRAME.size:
        stream, length = FRAME.unpack_from(buf, pos)
        end = pos + FRAME.size + length
        if stream not in (Stream.STDOUT, Stream.STDERR):
            raise CorruptLog(f"unknown frame type {stream} at offset {offset + pos}")
        if end > len(buf):
            break
        chunks.append(Chunk(Stream(stream), bytes(view[pos + FRAME.size : end]), offset + end))
        pos = end
    return chunks, pos


async def follow(path: Path, live: OutputLog | None, offset: int = 0) -> AsyncIterator[list[Chunk]]:
    """Every chunk from ``offset`` on; with ``live``, wait for more until the log closes.

    ``offset`` must be 0 or a ``next_offset`` handed out before; anything else is a frame
    boundary only by luck, and is reported as a corrupt position.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CorruptLog(f"output log {path.name} is missing") from None
    try:
        while True:
            # Take the event and the closed flag before reading: whatever is appended after
            # the read sets this very event, so no wake-up is lost.
            changed = live.changed if live is not None else None
            closed = live is None or live.closed
            buf = os.pread(fd, READ_SIZE, offset)
            chunks, used = parse_frames(buf, offset)
            if chunks:
                offset += used
                yield chunks
                continue
            if closed:
                if buf:
                    raise CorruptLog(f"output log ends inside a frame at offset {offset}")
                return
            assert changed is not None
            await changed.wait()
    finally:
        os.close(fd)
