"""jobctl asks for 64 KiB HTTP/2 frames (jobctl.client.MAX_FRAME_SIZE) through grpclib's
internals (grpclib has no setting for it): these tests pin that it still takes effect, and
that output arrives whole in the larger frames."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from h2.events import DataReceived

from harness import Daemon
from jobctl.client import MAX_FRAME_SIZE, JobClient

H2_DEFAULT_FRAME = 16 * 1024


def test_the_server_acknowledges_and_sends_larger_frames(daemon: Daemon) -> None:
    size = 4 * 1024 * 1024

    async def main() -> tuple[int, list[int], int]:
        async with JobClient.connect(
            daemon.server, cacert=daemon.certs.ca, cert=daemon.certs.client("client_0")
        ) as client:
            job = await client.start(["head", "-c", str(size), "/dev/zero"])
            channel: Any = client._stub.StreamOutput.channel
            h2 = channel._protocol.connection._connection
            frames: list[int] = []
            receive = h2.receive_data

            def spy(data: bytes) -> Any:
                events = receive(data)
                frames.extend(len(e.data) for e in events if isinstance(e, DataReceived))
                return events

            h2.receive_data = spy
            received = 0
            async with contextlib.aclosing(client.stream(job.id)) as messages:
                async for message in messages:
                    received += sum(len(c.data) for c in message.chunks)
            return h2.local_settings.max_frame_size, frames, received

    acknowledged, frames, received = asyncio.run(asyncio.wait_for(main(), 60))
    assert received == size
    # h2 applies a local setting only once the server has acknowledged it.
    assert acknowledged == MAX_FRAME_SIZE > H2_DEFAULT_FRAME
    assert max(frames) > H2_DEFAULT_FRAME
    assert max(frames) <= MAX_FRAME_SIZE
