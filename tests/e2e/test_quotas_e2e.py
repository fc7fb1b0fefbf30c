"""Per-identity quotas on a real daemon: running jobs, starts per minute, open streams, output
on disk."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel

from harness import (
    ROLES,
    Certs,
    Daemon,
    collect,
    expect_status,
    start,
    stop,
    wait_for_output,
    wait_until,
)
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub

pytestmark = pytest.mark.e2e

QUOTAS = "[quotas.identity.client_1]\nrunning = 2\nstreams = 1\nstarts_per_minute = {rate}\n"
READY = ["sh", "-c", "echo ready; exec sleep 300"]


@pytest.fixture
def limited(certs: Certs, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(certs, tmp_path / "state", config_extra=QUOTAS.format(rate=5)).start()
    try:
        yield d
    finally:
        code = d.stop()
    d.check_exit(code)


@contextlib.asynccontextmanager
async def client(daemon: Daemon, who: str) -> AsyncIterator[Any]:
    """A second connection, as another identity, on the running loop."""
    channel = Channel("127.0.0.1", daemon.port, ssl=client_context(daemon.certs.ca,
                                                                  daemon.certs.client(who)))
    try:
        yield JobServiceStub(channel)
    finally:
        channel.close()


async def job_ids(stub: Any) -> list[str]:
    return [j.id for j in (await stub.ListJobs(pb.ListJobsRequest())).jobs]


def test_running_quota_refuses_the_third_job_but_not_another_client(limited: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        first = await start(stub, ["sleep", "300"])
        second = await start(stub, ["sleep", "300"])
        message = await expect_status(Status.RESOURCE_EXHAUSTED, start(stub, ["sleep", "300"]))
        assert message == "quota reached: 2 running jobs for client_1"
        assert sorted(await job_ids(stub)) == sorted([first, second])  # no record of it
        async with client(limited, "client_2") as other:
            theirs = [await start(other, ["sleep", "300"]) for _ in range(3)]
            for job_id in theirs:
                await stop(other, job_id)
        await stop(stub, first)
        third = await start(stub, ["sleep", "300"])  # one slot free again
        await expect_status(Status.RESOURCE_EXHAUSTED, start(stub, ["sleep", "300"]))
        for job_id in (second, third):
            await stop(stub, job_id)

    limited.run("client_1", scenario)


def test_stream_quota_refuses_a_second_stream_while_the_first_is_open(limited: Daemon) -> None:
    async def open_stream(stub: Any, job_id: str) -> None:
        async with stub.StreamOutput.open() as stream:
            await stream.send_message(pb.StreamOutputRequest(job_id=job_id, no_follow=True),
                                      end=True)
            async for _ in stream:
                pass

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, READY)
        async with stub.StreamOutput.open() as first:
            await first.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
            seen = b""
            while b"ready" not in seen:
                seen += b"".join(c.data for c in (await first.recv_message()).chunks)
            message = await expect_status(Status.RESOURCE_EXHAUSTED, open_stream(stub, job_id))
            assert message == "quota reached: 1 open output streams for client_1"
            async with client(limited, "client_2") as other:  # not affected
                theirs = await start(other, ["echo", "hi"])
                assert (await collect(other, theirs))[0] == b"hi\n"
                async with client(limited, "client_0") as admin:  # two streams at once
                    await asyncio.gather(wait_for_output(admin, job_id, b"ready"),
                                         wait_for_output(admin, job_id, b"ready"))
            await first.cancel()
        # The daemon ends the first stream once it hears of the cancel: retry until it has.
        for _ in range(500):
            try:
                await open_stream(stub, job_id)
                break
            except GRPCError as exc:
                assert exc.status == Status.RESOURCE_EXHAUSTED, exc
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("the stream quota was never given back")
        await stop(stub, job_id)

    limited.run("client_1", scenario)


def test_start_rate_refuses_the_sixth_start_until_a_reload_raises_it(limited: Daemon) -> None:
    async def five(stub: Any) -> list[str]:
        done = []
        for _ in range(5):
            job_id = await start(stub, ["true"])
            await collect(stub, job_id)  # ended: the running quota (2) is not what refuses
            done.append(job_id)
        message = await expect_status(Status.RESOURCE_EXHAUSTED, start(stub, ["true"]))
        assert message == "quota reached: 5 job starts per minute for client_1"
        assert sorted(await job_ids(stub)) == sorted(done)
        async with client(limited, "client_2") as other:
            await collect(other, await start(other, ["true"]))
        return done

    limited.run("client_1", five)

    identities = "[identities]\n" + "".join(f'{k} = "{v}"\n' for k, v in ROLES.items())
    config = limited.state_dir.parent / f"{limited.state_dir.name}.toml"
    config.write_text(identities + QUOTAS.format(rate=10))
    limited.signal(signal.SIGHUP)
    assert wait_until(lambda: any("reloaded identities and limits" in line
                                  for line in limited.log))

    async def after(stub: Any) -> None:
        _, _, final, _ = await collect(stub, await start(stub, ["true"]))
        assert final.result.exit_code == 0

    limited.run("client_1", after)


def test_output_past_an_identitys_budget_is_dropped_or_replaces_its_own_oldest(
    certs: Certs, tmp_path: Path,
) -> None:
    # client_1 may keep 1 MiB of output on disk, in all of its jobs together.
    config = '[quotas.identity.client_1]\noutput = "1M"\n'
    daemon = Daemon(certs, tmp_path / "state", config_extra=config).start()
    try:
        async def scenario(stub: Any) -> None:
            flood = await start(stub, ["head", "-c", str(4 << 20), "/dev/zero"])
            out, _, final, _ = await collect(stub, flood)
            assert final.result.exit_code == 0  # never blocked nor killed
            assert len(out) <= 1 << 20 and len(out) + final.output_dropped_bytes == 4 << 20
            assert "client_1's output budget of 1 MiB reached" in final.output_error
            # A later job of client_1 makes room from client_1's own oldest output ...
            later = await start(stub, ["echo", "more"])
            out, _, final, _ = await collect(stub, later)
            assert out == b"more\n" and final.output_error == ""
            _, _, final, _ = await collect(stub, flood)
            assert final.output_error == (
                "output deleted: client_1's output budget of 1 MiB was reached")
            # ... while client_0 is not touched by client_1's use.
            async with client(daemon, "client_0") as other:
                theirs = await start(other, ["head", "-c", str(2 << 20), "/dev/zero"])
                out, _, final, _ = await collect(other, theirs)
                assert out == bytes(2 << 20) and final.output_error == ""

        daemon.run("client_1", scenario)
    finally:
        code = daemon.stop()
    daemon.check_exit(code)


def test_large_requests_count_against_the_disk_budget_across_restarts(
    certs: Certs, tmp_path: Path,
) -> None:
    # Each request below is kept whole, once (~2 MiB as JSON): two fit in 5 MiB, a third not.
    config = '[quotas.identity.client_1]\noutput = "5M"\n'
    big = {"argv": ["/nonexistent", "a" * ((1 << 20) - 100)],
           "env": {"BIG": "e" * ((1 << 20) - 100)}}

    async def fill(stub: Any) -> list[str]:
        for _ in range(2):  # failed starts: recorded, with their whole request
            with contextlib.suppress(GRPCError):
                await stub.StartJob(pb.StartJobRequest(**big))
        return await job_ids(stub)

    async def refused(stub: Any) -> None:
        message = await expect_status(Status.RESOURCE_EXHAUSTED,
                                      stub.StartJob(pb.StartJobRequest(**big)))  # fmt: skip
        assert message.startswith("client_1's disk budget of 5 MiB ([quotas] output) would "
                                  "be passed")
        assert len(await job_ids(stub)) == 2  # no record of it
        await collect(stub, await start(stub, ["echo", "small"]))  # small requests still run
        async with client(daemon, "client_0") as other:  # another identity is not touched
            with contextlib.suppress(GRPCError):
                await other.StartJob(pb.StartJobRequest(**big))
            assert len(await job_ids(other)) == 4

    daemon = Daemon(certs, tmp_path / "state", config_extra=config).start()
    try:
        assert len(daemon.run("client_1", fill)) == 2
        daemon.run("client_1", refused)
    finally:
        code = daemon.stop()
    daemon.check_exit(code)
    # Counted again from the history at the next start.
    daemon = Daemon(certs, tmp_path / "state", config_extra=config).start()
    try:
        async def still_refused(stub: Any) -> None:
            await expect_status(Status.RESOURCE_EXHAUSTED,
                                stub.StartJob(pb.StartJobRequest(**big)))  # fmt: skip

        daemon.run("client_1", still_refused)
    finally:
        code = daemon.stop()
    daemon.check_exit(code)
