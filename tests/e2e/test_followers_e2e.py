"""Followers at scale: hundreds at once get every byte; a stalled one costs a bounded amount."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel

from harness import Daemon, python, start
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub

pytestmark = pytest.mark.e2e

MiB = 1 << 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def digest(stub: Any, job_id: str) -> tuple[str, int]:
    """sha256 of the job's stdout as this follower received it, in order, and its length."""
    h = hashlib.sha256()
    total = 0
    async with stub.StreamOutput.open() as stream:
        await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
        async for msg in stream:
            for chunk in msg.chunks:
                h.update(chunk.data)
                total += len(chunk.data)
    return h.hexdigest(), total


def channel(daemon: Daemon) -> Channel:
    ctx = client_context(daemon.certs.ca, daemon.certs.client("client_0"))
    return Channel("127.0.0.1", daemon.port, ssl=ctx)


def test_two_hundred_followers_each_get_every_byte_in_order(daemon: Daemon) -> None:
    # Distinct bytes at every position, trickling out so followers join a live job.
    code = (
        "import sys, time\n"
        "for i in range(64):\n"
        "    sys.stdout.buffer.write(i.to_bytes(2, 'big') * 8192); sys.stdout.flush()\n"
        "    time.sleep(0.01)\n"
    )
    expected = b"".join(i.to_bytes(2, "big") * 8192 for i in range(64))

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, python(code))
        channels = [channel(daemon) for _ in range(4)]
        try:
            stubs = [JobServiceStub(c) for c in channels]
            results = await asyncio.gather(*(digest(stubs[i % 4], job_id) for i in range(200)))
        finally:
            for c in channels:
                c.close()
        want = (hashlib.sha256(expected).hexdigest(), len(expected))
        assert all(r == want for r in results), {r for r in results if r != want}

    daemon.run("client_0", scenario, timeout=300)


def test_a_stalled_follower_neither_blocks_the_job_nor_grows_memory(daemon: Daemon) -> None:
    size = 256 * MiB
    assert daemon.proc is not None
    pid = daemon.proc.pid

    async def scenario(stub: Any) -> None:
        before = rss_mib(pid)
        job_id = await start(stub, ["head", "-c", str(size), "/dev/zero"])
        stalled_channel = channel(daemon)  # a connection of its own, as a stuck client has
        try:
            stalled = JobServiceStub(stalled_channel).StreamOutput.open()
            stream = await stalled.__aenter__()
            await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
            await stream.recv_message()  # then never read again
            # Another follower still gets everything, and the job ends while one is stalled.
            got = await digest(stub, job_id)
            assert got == (hashlib.sha256(bytes(size)).hexdigest(), size)
            job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
            assert job.state == pb.JOB_STATE_FINISHED and job.result.exit_code == 0
            grown = rss_mib(pid) - before
            # A follower costs about one read batch (512 KiB) plus buffers, never the output.
            assert grown < 48, f"daemon RSS grew {grown:.1f} MiB for {size // MiB} MiB of output"
            await stream.cancel()
            await stalled.__aexit__(None, None, None)
        finally:
            stalled_channel.close()

    daemon.run("client_0", scenario, timeout=300)
