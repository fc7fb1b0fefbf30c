"""A running job's output: each read of its pipes goes to the log writer and to every live stream.

The pumps hand each read to :meth:`Broadcast.send`, which frames it (its place in the log is
fixed there), gives it to every live subscriber's memory channel without waiting
(``send_nowait``), and then to the log writer's bounded channel, waiting when the writer is
behind: the log keeps every byte, so a slow disk slows the job (its pipe fills), never the
event loop. The writer task gathers what is queued into one batch, writes it on a worker thread,
and then wakes the file readers by replacing an Event.

A subscriber that would hold more than LIVE_BUFFER bytes not yet taken is cut off: its queue is
emptied and closed, so that it holds nothing, and its follower reads the log from its own
offset at its own pace (``jobd.jobs.output.follow``), then joins again once it has caught
up: ``join`` hands it what is framed but not yet on disk, so no byte is missed or repeated.
A stalled stream therefore never blocks the job, the pumps or other streams.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Awaitable, Callable

import trio

from jobd.jobs.output import Chunk, Frames, OutputLog, Stream

# What a live stream may have queued and not yet taken (bytes); past that it is cut over to
# the log. A read is at most a pipe's worth (1 MiB), so this is a few reads.
LIVE_BUFFER = 4 << 20
# Reads queued for the log writer before the pumps wait (each at most 1 MiB): with the batch
# on the worker thread, what a job's output holds in memory on its way to disk.
WRITER_QUEUE = 2


class Subscription:
    """One live stream's place in the broadcast: the chunks sent to it, in order."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Chunk](math.inf)
        self.queued = 0  # bytes sent to it and not yet taken; bounded by LIVE_BUFFER
        self.cut = False  # cut off for falling behind (else the output ended)

    async def receive(self) -> Chunk:
        """The next chunk; EndOfChannel when the output has ended or this was cut off."""
        chunk = await self._receive.receive()
        self.queued -= len(chunk.data)
        return chunk

    def receive_nowait(self) -> Chunk:
        chunk = self._receive.receive_nowait()
        self.queued -= len(chunk.data)
        return chunk

    def _offer(self, chunk: Chunk) -> bool:
        """Queue ``chunk``; False when that would pass LIVE_BUFFER or the reader has left."""
        if self.queued + len(chunk.data) > LIVE_BUFFER:
            return False
        try:
            self._send.send_nowait(chunk)
        except trio.BrokenResourceError:
            return False
        self.queued += len(chunk.data)
        return True

    def _cut_off(self) -> None:
        self.cut = True
        self._empty()
        self._send.close()

    def _empty(self) -> None:
        # Hold nothing for a stream that is not reading: its follower reads the log instead.
        while True:
            try:
                self.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return  # emptied, or the reader has left

    def close(self) -> None:
        """The reader leaves (its RPC ended); the broadcast drops it at its next chunk."""
        self._empty()
        self._receive.close()


class Broadcast:
    """One running job's output. Run :meth:`run` (the log writer) in the job's nursery, send
    each read with :meth:`send`, and once the pumps are done call :meth:`close_input` and
    wait for :meth:`wait_closed`."""

    def __init__(self, log: OutputLog,
                 write: Callable[[list[Frames]], Awaitable[OSError | None]] | None = None) -> None:
        self.log = log
        # How a batch reaches the disk: on a worker thread (tests pass their own pace).
        self._write = write or self._write_on_thread
        self._to_writer, self._writer_queue = trio.open_memory_channel[Frames](WRITER_QUEUE)
        # The two pumps reach the writer's queue in the order their reads were framed.
        self._order = trio.StrictFIFOLock()
        self._subscribers: set[Subscription] = set()
        # Framed and not yet on disk, in order: what a stream joining at the log's end needs.
        self._pending: collections.deque[Chunk] = collections.deque()
        self._pending_bytes = 0
        self._closed = trio.Event()
        self._running = False
        self._input_closed = False

    # The file side, as a follower sees it (jobd.jobs.output.Live); the counts are the log's own.

    @property
    def size(self) -> int:
        return self.log.size

    @property
    def written(self) -> int:
        return self.log.written

    @property
    def closed(self) -> bool:
        return self.log.closed

    @property
    def changed(self) -> trio.Event:
        return self.log.changed

    async def wait_written(self, offset: int) -> None:
        """Until the log holds everything before ``offset`` on disk (or is closed)."""
        while self.log.written < offset and not self.log.closed:
            await self.log.changed.wait()
        await trio.lowlevel.checkpoint()

    def is_pending_boundary(self, offset: int) -> bool:
        """Whether a chunk framed and not yet on disk ends at ``offset``."""
        return any(chunk.next_offset == offset for chunk in self._pending)

    # The pumps' side.

    async def send(self, stream: Stream, data: bytes | bytearray) -> None:
        """Frame ``data`` and hand it to every live stream, then to the log writer (waits
        while the writer is behind)."""
        async with self._order:
            frames = self.log.frame(stream, data)
            if frames is None:
                return
            chunk = Chunk(stream, bytes(frames.data), frames.end)
            self._pending.append(chunk)
            self._pending_bytes += len(chunk.data)
            for subscriber in list(self._subscribers):
                if not subscriber._offer(chunk):
                    self._subscribers.discard(subscriber)
                    subscriber._cut_off()
            # Framed means it is written: not even a cancelled pump may leave a hole.
            with trio.CancelScope(shield=True):
                await self._to_writer.send(frames)

    def close_input(self) -> None:
        """No more reads: the writer finishes what is queued, then closes the log."""
        self._input_closed = True
        self._to_writer.close()
        if not self._running:  # nothing was sent (the job never started)
            self._finish()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # The streams' side.

    def join(self, offset: int) -> Subscription | None:
        """Follow live from ``offset``, where a follower that read the log to its end is: the
        new subscription starts with what is framed and not yet on disk. None when that is
        more than a stream may hold (the follower waits for the writer and tries again), or
        when the output has ended."""
        if self._input_closed or offset != self.log.written:
            return None
        if self._pending_bytes > LIVE_BUFFER:
            return None
        subscription = Subscription()
        for chunk in self._pending:
            subscription._offer(chunk)
        self._subscribers.add(subscription)
        return subscription

    # The log writer.

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what the pumps send until the input is closed, then close the log. Shielded:
        every framed byte reaches the disk, even while the daemon shuts down."""
        self._running = True
        task_status.started()
        with trio.CancelScope(shield=True):
            async with self._writer_queue:
                async for frames in self._writer_queue:
                    batch = [frames]
                    while len(batch) <= WRITER_QUEUE:
                        try:
                            batch.append(self._writer_queue.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    failure = await self._write(batch)
                    self._written(batch, failure)
            self._finish()

    async def _write_on_thread(self, batch: list[Frames]) -> OSError | None:
        return await trio.to_thread.run_sync(self.log.write, batch)

    def _written(self, batch: list[Frames], failure: OSError | None) -> None:
        self.log.commit(batch, failure)
        end = self.log.written if failure is None else self.log.size
        while self._pending and (failure is not None or self._pending[0].next_offset <= end):
            self._pending_bytes -= len(self._pending.popleft().data)

    def _finish(self) -> None:
        self.log.close()
        for subscriber in self._subscribers:
            subscriber._send.close()  # the end of the output, after every chunk queued
        self._subscribers.clear()
        self._closed.set()
