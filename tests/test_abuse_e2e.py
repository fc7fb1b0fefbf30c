"""End to end, as a client that breaks the protocol or floods the daemon: every such client
gets a status or is cut off, costs bounded memory and CPU, and other clients do not notice."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from h2raw import RawClient

from harness import Certs, Daemon, collect, start
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e

INVALID_ARGUMENT = 3


@pytest.fixture
def daemon(certs: Certs, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(certs, tmp_path / "state").start()
    try:
        yield d
    finally:
        code = d.stop()
    d.check_exit(code)


def grpc_message(body: bytes) -> bytes:
    return struct.pack(">?I", False, len(body)) + body


GET = grpc_message(pb.GetJobRequest(job_id="0").SerializeToString())
MALFORMED = {
    "a header shorter than 5 bytes": [b"\x00\x00\x00"],
    "a body shorter than its declared length": [struct.pack(">?I", False, 100) + b"x" * 10],
    "an empty DATA frame first": [b"", GET],
    "no message at all": [],
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("rpc", ["GetJob", "StartJob", "StreamOutput"])
def test_a_malformed_request_gets_invalid_argument_and_no_bug_line(
    daemon: Daemon, certs: Certs, case: str, rpc: str
) -> None:
    client = RawClient.connect(daemon.port, certs.ca, certs.client("client_0"))
    try:
        stream = client.call(rpc, MALFORMED[case])
        client.pump(until=stream)
        answer = client.answers[stream]
    finally:
        client.close()
    assert answer.status == INVALID_ARGUMENT, answer
    assert not [line for line in daemon.log if "bug:" in line or "Traceback" in line]


def test_a_tail_of_a_million_frames_answers_at_once_and_blocks_no_one(
    daemon: Daemon, tmp_path: Path
) -> None:
    async def finished(stub: Any) -> str:
        job_id = await start(stub, ["true"])
        await collect(stub, job_id)
        return job_id

    job_id = daemon.run("client_0", finished)
    # A million one-byte frames and not one newline: a walk to the start would take seconds.
    frame = struct.pack(">BI", 1, 1) + b"x" + struct.pack(">I", 1)
    (tmp_path / "state" / "output" / f"{job_id}.log").write_bytes(frame * 1_000_000)

    async def tails_and_a_bystander(stub: Any) -> tuple[float, list[float]]:
        waits: list[float] = []

        async def bystander() -> None:
            for _ in range(20):
                begin = time.monotonic()
                await stub.GetJob(pb.GetJobRequest(job_id=job_id))
                waits.append(time.monotonic() - begin)

        begin = time.monotonic()
        tails = [stub.StreamOutput(pb.StreamOutputRequest(job_id=job_id, tail_lines=1,
                                                          no_follow=True))
                 for _ in range(5)]  # fmt: skip
        replies, _ = await asyncio.gather(asyncio.gather(*tails), bystander())
        took = time.monotonic() - begin
        for reply in replies:
            data = b"".join(c.data for message in reply for c in message.chunks)
            assert data and set(data) == {ord("x")}  # the end of the one long line
        return took, waits

    took, waits = daemon.run("client_0", tails_and_a_bystander)
    assert took < 5.0, took  # generous: the walk is bounded (65,536 frames)
    assert max(waits) < 1.0, waits  # the event loop never waited for a walk
