"""The standard gRPC surface: health, reflection, Google's grpcio client, cancellation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from harness import Daemon, start, wait_for_output, wait_until
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e


def open_channel(daemon: Daemon) -> Channel:
    ctx = client_context(daemon.certs.ca, daemon.certs.client("client_0"))
    return Channel("127.0.0.1", daemon.port, ssl=ctx)


def test_health_reports_serving(daemon: Daemon) -> None:
    async def scenario() -> None:
        channel = open_channel(daemon)
        try:
            stub = HealthStub(channel)
            for name in ("", "jobd.v1.JobService"):
                reply = await stub.Check(HealthCheckRequest(service=name))
                assert reply.status == HealthCheckResponse.SERVING
        finally:
            channel.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_reflection_lists_the_services(daemon: Daemon) -> None:
    async def scenario() -> list[str]:
        channel = open_channel(daemon)
        try:
            async with ServerReflectionStub(channel).ServerReflectionInfo.open() as stream:
                await stream.send_message(ServerReflectionRequest(list_services=""), end=True)
                reply = await stream.recv_message()
                assert reply is not None
                return [s.name for s in reply.list_services_response.service]
        finally:
            channel.close()

    names = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "jobd.v1.JobService" in names
    assert "grpc.health.v1.Health" in names


def test_a_grpcio_client_starts_and_streams_a_job(daemon: Daemon) -> None:
    pem = daemon.certs.client("client_0").read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=daemon.certs.ca.read_bytes(), private_key=pem, certificate_chain=pem
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{daemon.port}", credentials, options) as channel:
        start_job = channel.unary_unary(
            "/jobd.v1.JobService/StartJob",
            request_serializer=pb.StartJobRequest.SerializeToString,
            response_deserializer=pb.StartJobResponse.FromString,
        )
        stream_output = channel.unary_stream(
            "/jobd.v1.JobService/StreamOutput",
            request_serializer=pb.StreamOutputRequest.SerializeToString,
            response_deserializer=pb.StreamOutputResponse.FromString,
        )
        reply = start_job(pb.StartJobRequest(argv=["sh", "-c", "echo out; echo err >&2"]),
                          timeout=60)  # fmt: skip
        out, err, final = b"", b"", None
        for msg in stream_output(pb.StreamOutputRequest(job_id=reply.job_id), timeout=60):
            for chunk in msg.chunks:
                if chunk.stream == pb.OUTPUT_STREAM_STDOUT:
                    out += chunk.data
                else:
                    err += chunk.data
            final = msg.final if msg.HasField("final") else final
        assert (out, err) == (b"out\n", b"err\n")
        assert final is not None and final.result.exit_code == 0
        with pytest.raises(grpc.RpcError) as info:
            start_job(pb.StartJobRequest(), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _log_fds(pid: int, job_id: str) -> int:
    """How many descriptors the daemon holds on the job's output log."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).endswith(f"{job_id}.log"):
                count += 1
        except OSError:
            continue
    return count


def test_a_cancelled_stream_frees_its_follower(daemon: Daemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["sh", "-c", "echo ready; exec sleep 300"])
        await wait_for_output(stub, job_id, b"ready")  # its follower is gone once it returns
        assert wait_until(lambda: _log_fds(pid, job_id) == 1)  # the writer's only
        async with stub.StreamOutput.open() as stream:
            await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
            await stream.recv_message()
            assert _log_fds(pid, job_id) == 2  # the writer's and this follower's
            await stream.cancel()
        assert wait_until(lambda: _log_fds(pid, job_id) == 1)
        await stub.StopJob(pb.StopJobRequest(job_id=job_id))

    daemon.run("client_0", scenario)


def test_a_client_deadline_ends_the_stream_and_frees_its_follower(daemon: Daemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["sh", "-c", "echo ready; exec sleep 300"])
        await wait_for_output(stub, job_id, b"ready")
        # grpclib's client enforces the deadline itself (TimeoutError) or hears the server's.
        with pytest.raises((TimeoutError, GRPCError)) as info:
            async with stub.StreamOutput.open(timeout=1.0) as stream:
                await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
                async for _ in stream:
                    pass
        if isinstance(info.value, GRPCError):
            assert info.value.status == Status.DEADLINE_EXCEEDED
        assert wait_until(lambda: _log_fds(pid, job_id) == 1)  # the writer's only
        await stub.StopJob(pb.StopJobRequest(job_id=job_id))

    daemon.run("client_0", scenario)
