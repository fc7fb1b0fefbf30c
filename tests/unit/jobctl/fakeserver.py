"""A small fake JobService served by grpclib over mutual TLS on 127.0.0.1, from a thread
with its own asyncio loop, for the CLI tests; and what those tests share."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from jobd.api.tls import server_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceBase


@dataclass
class FakeCerts:
    ca: Path
    server: Path
    client: Path
    other_ca: Path
    other_client: Path


def chunk(
    data: bytes, stream: pb.OutputStream.ValueType = pb.OUTPUT_STREAM_STDOUT
) -> pb.OutputChunk:
    return pb.OutputChunk(stream=stream, data=data)


class FakeJobService(JobServiceBase):
    """Jobs live in a dict; each job's output is a list of messages to stream.

    A job whose state is not FINISHED streams its messages and then waits: a client that
    does not stop by itself gets ABORTED after 10 s (a failure instead of a hang), unless
    it asked for ``no_follow``: then the job's current status follows its messages.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, pb.Job] = {}
        self.output: dict[str, list[pb.StreamOutputResponse]] = {}
        self.requests: list[Any] = []
        self.stream_ended = threading.Event()
        self.error: GRPCError | None = None
        self.endless: set[str] = set()  # jobs that print a line every 10 ms, forever
        self.page_size = 1000  # at most this many jobs per ListJobs answer, whatever was asked
        self.break_after: GRPCError | None = None  # raised after the output instead of the end

    def add(self, job: pb.Job, *messages: pb.StreamOutputResponse) -> None:
        """Add a job (newer than those added before) and its output; each chunk without a
        next_offset gets one as jobd's framed log would give it (9 bytes a frame)."""
        self.jobs[job.id] = job
        self.output[job.id] = list(messages)
        position = 0
        for message in messages:
            for c in message.chunks:
                position = c.next_offset = c.next_offset or position + 9 + len(c.data)

    async def _request(self, stream: Stream[Any, Any]) -> Any:
        request = await stream.recv_message()
        assert request is not None
        self.requests.append(request)
        return request

    async def _job(self, stream: Stream[Any, Any]) -> tuple[Any, pb.Job]:
        request = await self._request(stream)
        if self.error:
            raise self.error
        if request.job_id not in self.jobs:
            raise GRPCError(Status.NOT_FOUND, f"job {request.job_id} not found")
        return request, self.jobs[request.job_id]

    async def StartJob(self, stream: Stream[Any, Any]) -> None:
        request = await self._request(stream)
        if self.error:
            raise self.error
        job = pb.Job(
            id=f"job-{len(self.jobs) + 1}",
            owner="alice",
            argv=request.argv,
            env=request.env,
            cwd=request.cwd,
            state=pb.JOB_STATE_RUNNING,
            pid=7,
            limits=request.limits,
        )
        if request.argv[0] == "no-such-program":
            job.state, job.pid = pb.JOB_STATE_FINISHED, 0
            job.result.outcome = pb.JobResult.OUTCOME_FAILED_TO_START
            job.result.message = "failed to start: no-such-program: No such file or directory"
        self.add(job)
        await stream.send_message(pb.StartJobResponse(job_id=job.id, job=job))

    async def StopJob(self, stream: Stream[Any, Any]) -> None:
        _, job = await self._job(stream)
        job.state, job.pid = pb.JOB_STATE_FINISHED, 0
        job.result.outcome = pb.JobResult.OUTCOME_STOPPED
        job.result.stopped_by = "alice"
        job.result.signal = 15
        job.result.message = "stopped by alice (SIGTERM)"
        await stream.send_message(job)

    async def GetJob(self, stream: Stream[Any, Any]) -> None:
        _, job = await self._job(stream)
        await stream.send_message(job)

    async def ListJobs(self, stream: Stream[Any, Any]) -> None:
        request = await self._request(stream)
        newest_first = reversed(self.jobs.values())
        jobs = [j for j in newest_first if not request.owner or j.owner == request.owner]
        start = int(request.page_token or 0)
        end = start + min(request.limit or 1000, self.page_size)
        token = str(end) if end < len(jobs) else ""
        await stream.send_message(pb.ListJobsResponse(jobs=jobs[start:end], next_page_token=token))

    async def StreamOutput(self, stream: Stream[Any, Any]) -> None:
        """Honours ``offset``, ``only`` and ``no_follow``; ``tail_lines`` is only recorded."""
        request, job = await self._job(stream)
        offsets = {0} | {c.next_offset for m in self.output[job.id] for c in m.chunks}
        if request.offset not in offsets:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"offset {request.offset} is not where a chunk starts: give 0 or a next_offset "
                "received before",
            )
        try:
            for message in self.output[job.id]:
                chunks = [
                    c
                    for c in message.chunks
                    if c.next_offset > request.offset and request.only in (0, c.stream)
                ]
                if chunks or not message.chunks:
                    await stream.send_message(pb.StreamOutputResponse(chunks=chunks))
            if self.break_after is not None:
                raise self.break_after
            while job.id in self.endless:
                await stream.send_message(pb.StreamOutputResponse(chunks=[chunk(b"tick\n")]))
                await asyncio.sleep(0.01)
            if job.state != pb.JOB_STATE_FINISHED and not request.no_follow:
                await asyncio.sleep(10)
                raise GRPCError(Status.ABORTED, "fake: the client did not stop by itself")
            await stream.send_message(pb.StreamOutputResponse(final=job))
        finally:
            self.stream_ended.set()


def run_asyncio(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on a plain selector loop: other test modules import trio_asyncio, which
    makes ``asyncio.run`` build its own kind of loop for the whole process."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)


@contextmanager
def serve(service: FakeJobService, fake_certs: FakeCerts) -> Iterator[int]:
    """Serve ``service`` over mTLS on 127.0.0.1 from a thread; yield the port."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        server = Server([service])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        state["port"] = sock.getsockname()[1]
        await server.start(sock=sock, ssl=server_context(fake_certs.ca, fake_certs.server))
        started.set()
        await state["stop"].wait()
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=run_asyncio, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)




NASTY = bytes(range(256)) + b"\x00\xff\xfe not utf-8 \xc3\x28"


def stream_requests(service: FakeJobService) -> list[pb.StreamOutputRequest]:
    return [r for r in service.requests if isinstance(r, pb.StreamOutputRequest)]


def mixed_output() -> list[pb.StreamOutputResponse]:
    return [
        pb.StreamOutputResponse(
            chunks=[chunk(b"o1\no2\n"), chunk(b"e1\n", pb.OUTPUT_STREAM_STDERR), chunk(b"o3")]
        ),
        pb.StreamOutputResponse(
            chunks=[chunk(b"\no4\n"), chunk(b"e2\ne3\ne4", pb.OUTPUT_STREAM_STDERR)]
        ),
        pb.StreamOutputResponse(chunks=[chunk(b"o5\n")]),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MiB = 2**20
NOW = 1_700_000_000.0


def make_job(**fields: Any) -> pb.Job:
    job = pb.Job(
        id="j1",
        owner="alice",
        argv=["sleep", "5"],
        env={"A": "1"},
        cwd="/srv",
        state=pb.JOB_STATE_RUNNING,
        pid=4242,
        output_bytes=1536,
        run_as="nobody:nogroup (65534:65534)",
    )
    job.created_at.FromSeconds(int(NOW) - 300)
    job.started_at.FromSeconds(int(NOW) - 299)
    for name, value in fields.items():
        if isinstance(value, pb.JobResult):
            job.result.CopyFrom(value)
        elif isinstance(value, list):
            getattr(job, name)[:] = value
        else:
            setattr(job, name, value)
    return job


def finished(**result: Any) -> pb.Job:
    job = make_job(state=pb.JOB_STATE_FINISHED, pid=0, result=pb.JobResult(**result))
    job.ended_at.FromSeconds(int(NOW) - 10)
    return job
