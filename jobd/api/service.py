"""The gRPC service: protobuf in, identity and authorization, a manager call, protobuf out.

Handlers run on the asyncio side (grpclib). A call whose domain operation may wait (StartJob,
which waits for the launcher's word, StopJob, ListJobs, StreamOutput) hops into a trio task at
once; one whose operation never waits (GetJob) calls it directly, as trio-asyncio runs asyncio
on the trio thread. Domain
errors become gRPC statuses here and only here, through ``STATUS_OF``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import trio
import trio_asyncio
from google.protobuf.message import DecodeError, Message
from grpclib import GRPCError, Status
from grpclib.server import Stream

from jobd.api import grpclib_private
from jobd.api.audit import AuditLog
from jobd.api.connections import send_room, send_room_now
from jobd.api.convert import STREAM_FROM_PB, chunks_to_pb, job_to_pb, spec_from_pb
from jobd.api.metrics import Metrics
from jobd.api.peer import CALLER, PeerCertificate
from jobd.jobs.manager import JobManager
from jobd.jobs.store import page_token
from jobd.model import bounds, errors
from jobd.policy.auth import Action, Identity, Role, authorize
from jobd.policy.quotas import refusal
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceBase

log = logging.getLogger(__name__)

STATUS_OF: Mapping[type[errors.JobdError], Status] = {
    errors.InvalidArgument: Status.INVALID_ARGUMENT,
    errors.NotFound: Status.NOT_FOUND,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
    errors.FailedPrecondition: Status.FAILED_PRECONDITION,
    errors.SpawnFailed: Status.FAILED_PRECONDITION,
    errors.ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    errors.Unavailable: Status.UNAVAILABLE,
    errors.DataLoss: Status.DATA_LOSS,
}

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])


def status_of(exc: errors.JobdError) -> Status:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    raise AssertionError(f"no gRPC status for {type(exc).__name__}")


@dataclass
class Call:
    """What a handler learned about its call, for the audit line the wrapper writes."""

    identity: str = ""
    job_id: str = ""


_CALL: contextvars.ContextVar[Call] = contextvars.ContextVar("jobd_call")


def current_call() -> Call:
    """This call's record (a throwaway one outside ``rpc``)."""
    return _CALL.get(Call())


def _peer(stream: Stream[Any, Any]) -> str:
    """The client's address; "" once its connection is gone (asyncio drops the transport)."""
    try:
        addr = stream.peer.addr()
    except (AttributeError, OSError):
        return ""
    if not addr:
        return ""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def recv_request(stream: Stream[Any, Any], within: float = math.inf) -> Any:
    """``stream.recv_message()``, refusing a message over ``bounds.MAX_MESSAGE_BYTES`` from
    its 5-byte gRPC header, before its body is read: grpclib 0.4 has no such setting. This
    mirrors ``grpclib.server.Stream.recv_message``; other stream types (the unit tests'
    fakes) are asked as they are. A request that has not arrived ``within`` seconds
    is refused: a call that never sends one would hold its handler forever."""
    try:
        async with asyncio.timeout(None if math.isinf(within) else within):
            return await _recv_request(stream)
    except TimeoutError:
        raise errors.ResourceExhausted(
            f"the request message did not arrive within {within:g} s of the call"
        ) from None


async def _recv_request(stream: Stream[Any, Any]) -> Any:
    if not isinstance(stream, Stream):
        return await stream.recv_message()
    meta = await _recv_exactly(stream, 5)
    if not meta:
        return None
    compressed, length = struct.unpack(">?I", meta)
    if compressed:
        raise errors.InvalidArgument("compressed messages are not supported")
    if length > bounds.MAX_MESSAGE_BYTES:
        raise errors.ResourceExhausted(
            f"request message is {length} bytes; the most is {bounds.MAX_MESSAGE_BYTES}"
        )
    body = await _recv_exactly(stream, length) if length else b""
    try:
        message = grpclib_private.decode_request(stream, body)
    except DecodeError as exc:  # a client's malformed bytes, not a bug of ours
        raise errors.InvalidArgument(f"the request is not a valid message: {exc}") from None
    return await grpclib_private.received(stream, message, time.monotonic())


async def _recv_exactly(stream: Stream[Any, Any], size: int) -> bytes:
    """``size`` bytes of the request (b"": the request ended before any). grpclib asserts when
    the request ends short of a read, and takes an empty DATA frame for the end: both are a
    client's malformed request, never a bug of ours."""
    try:
        data = await grpclib_private.h2_stream_of(stream).recv_data(size)
    except AssertionError:
        data = None
    if data is not None and (len(data) == size or not data):
        return bytes(data)
    what = "message header" if size == 5 else "message"
    raise errors.InvalidArgument(f"the request ended inside its gRPC {what}: it is truncated")


def rpc(handler: Handler) -> Handler:
    """Map domain errors to statuses; log anything else as the bug it is. Audit every call."""

    @functools.wraps(handler)
    async def wrapper(self: JobService, stream: Stream[Any, Any]) -> None:
        status = "OK"
        message = ""
        call = Call()
        token = _CALL.set(call)
        peer = _peer(stream) if self.audit.fd is not None else ""
        try:
            await handler(self, stream)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # grpclib cancelled the call (the client reset it) while the trio side was
                # finishing normally: say so, or grpclib logs a spurious traceback.
                raise asyncio.CancelledError()
        except errors.JobdError as exc:
            status, message = status_of(exc).name, str(exc)
            raise GRPCError(status_of(exc), str(exc)) from None
        except GRPCError as exc:
            status, message = exc.status.name, str(exc.message or "")
            raise
        except asyncio.CancelledError:
            status, message = "CANCELLED", "the call was cancelled"
            raise
        except Exception:
            status, message = "INTERNAL", "internal error"
            log.exception("bug: %s failed", handler.__name__)
            raise GRPCError(Status.INTERNAL, "internal error; jobd logged the details") from None
        finally:
            _CALL.reset(token)
            self.metrics.rpcs[(handler.__name__, status)] += 1
            if self.audit.fd is not None:
                self.audit.record(
                    identity=call.identity, peer=peer, action=handler.__name__,
                    job_id=call.job_id, outcome="ok" if status == "OK" else status,
                    message=message,
                )

    return wrapper  # type: ignore[return-value]


def identity_of(roles: Mapping[str, Role], revoked: frozenset[int] = frozenset(),
                caller: PeerCertificate | None = None) -> Identity:
    """The caller, from its verified certificate only (``caller``: the connection's, as
    ``jobd.api.peer.CALLER`` hands it to the call). Fails closed: a certificate the CRL
    revokes now is refused, however long ago its connection was opened."""
    if caller is None:
        raise errors.PermissionDenied("no TLS session")
    if caller.refused:
        raise errors.PermissionDenied(caller.refused)
    if caller.serial is not None and caller.serial in revoked:
        raise errors.PermissionDenied("the client certificate has been revoked")
    return Identity.lookup(caller.name, roles)


class JobService(JobServiceBase):
    def __init__(
        self, manager: JobManager, metrics: Metrics | None = None,
        audit: AuditLog | None = None, request_timeout: float = math.inf,
    ) -> None:
        self.manager = manager
        self.request_timeout = request_timeout
        self.audit = audit or AuditLog(None)
        self.metrics = metrics or Metrics()
        self.metrics.gauges = lambda: (len(manager.running()), self.active_streams)
        self.metrics.jobs_finished = manager.finished_outcomes
        self.active_streams = 0
        self.streams_by: Counter[str] = Counter()  # open streams per identity (quotas)
        self._streams_idle = trio.Event()
        self._streams_idle.set()

    def _identify(self, stream: Stream[Any, Any]) -> Identity:
        policy = self.manager.policy.now  # roles and revocations as reloaded by SIGHUP
        identity = identity_of(policy.roles, policy.revoked, CALLER.get(None))
        current_call().identity = identity.name
        return identity

    async def _unary(
        self, stream: Stream[Any, Any], fn: Callable[[Identity, Any], Awaitable[Message]]
    ) -> None:
        """A call whose domain operation may wait: it runs as a trio task."""
        identity, request = await self._request(stream)
        await self._reply(stream, await trio_asyncio.trio_as_aio(fn)(identity, request))

    async def _unary_now(
        self, stream: Stream[Any, Any], fn: Callable[[Identity, Any], Message]
    ) -> None:
        """A call whose domain operation never waits (GetJob): it is called right here.
        grpclib's asyncio runs inside trio-asyncio's loop, itself a trio task on the trio
        thread, so code that only touches trio objects without waiting (Events, the clock) is
        as safe here as in a task of its own; and the round trip to a new trio task and back
        is ~0.1 ms of a call."""
        identity, request = await self._request(stream)
        await self._reply(stream, fn(identity, request))

    async def _request(self, stream: Stream[Any, Any]) -> tuple[Identity, Any]:
        identity = self._identify(stream)
        request = await recv_request(stream, self.request_timeout)
        if request is None:
            raise errors.InvalidArgument("the call carries no request message")
        current_call().job_id = bounds.shown_job_id(getattr(request, "job_id", ""))
        return identity, request

    async def _reply(self, stream: Stream[Any, Any], reply: Message) -> None:
        if isinstance(reply, pb.StartJobResponse):
            current_call().job_id = reply.job_id
        await stream.send_message(reply)

    @rpc
    async def StartJob(self, stream: Stream[pb.StartJobRequest, pb.StartJobResponse]) -> None:
        await self._unary(stream, self._start)

    @rpc
    async def StopJob(self, stream: Stream[pb.StopJobRequest, pb.Job]) -> None:
        await self._unary(stream, self._stop)

    @rpc
    async def GetJob(self, stream: Stream[pb.GetJobRequest, pb.Job]) -> None:
        await self._unary_now(stream, self._get)

    @rpc
    async def ListJobs(self, stream: Stream[pb.ListJobsRequest, pb.ListJobsResponse]) -> None:
        await self._unary(stream, self._list)

    @rpc
    async def StreamOutput(
        self, stream: Stream[pb.StreamOutputRequest, pb.StreamOutputResponse]
    ) -> None:
        identity, request = await self._request(stream)
        send = trio_asyncio.aio_as_trio(stream.send_message)
        wait_room = trio_asyncio.aio_as_trio(send_room)

        async def room() -> int:  # the hop to asyncio only when it has to wait
            return send_room_now(stream) or await wait_room(stream)

        await trio_asyncio.trio_as_aio(self._stream_output)(
            identity, request, send, room if isinstance(stream, Stream) else None)

    # The trio side: plain trio code from here on (the synchronous one is called from
    # asyncio directly: see _unary_now).

    async def _start(
        self, identity: Identity, request: pb.StartJobRequest
    ) -> pb.StartJobResponse:
        authorize(identity, Action.START)
        assert identity.role is not None  # authorize() refused callers without a role
        begin = trio.current_time()
        job = await self.manager.start(identity.name, spec_from_pb(request), identity.role)
        self.metrics.job_started(trio.current_time() - begin)
        return pb.StartJobResponse(job_id=job.id, job=job_to_pb(job))

    def _job(self, identity: Identity, action: Action, job_id: str) -> Any:
        # An id that cannot be a job's is not looked up: it names no job (NOT_FOUND).
        job = self.manager.find(job_id) if bounds.job_id_plausible(job_id) else None
        shown = bounds.shown_job_id(job_id)
        authorize(identity, action, job_id=shown, owner=job.owner if job else None)
        return job

    async def _stop(self, identity: Identity, request: pb.StopJobRequest) -> pb.Job:
        job = self._job(identity, Action.STOP, request.job_id)
        grace = request.grace.ToTimedelta().total_seconds() if request.HasField("grace") else None
        return job_to_pb(await self.manager.stop(job, identity.name, grace))

    def _get(self, identity: Identity, request: pb.GetJobRequest) -> pb.Job:
        job = self._job(identity, Action.STATUS, request.job_id)
        return job_to_pb(self.manager.with_current_usage(job))

    async def _list(self, identity: Identity, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        bounds.check_owner(request.owner)
        authorize(identity, Action.LIST, owner=request.owner)
        owner = request.owner or (identity.name if identity.role is Role.USER else None)
        page = await self.manager.jobs(owner, request.limit, request.page_token)
        reply = pb.ListJobsResponse(next_page_token=page.next_token)
        size = 0
        for i, job in enumerate(page.jobs):  # each with its request summarized: a few KiB
            message = job_to_pb(job, brief=True)
            size += message.ByteSize()
            if size > bounds.MAX_PAGE_BYTES and i:
                reply.next_page_token = page_token(page.jobs[i - 1])  # cut short: the rest next
                break
            reply.jobs.append(message)
        return reply

    async def _stream_output(
        self,
        identity: Identity,
        request: pb.StreamOutputRequest,
        send: Callable[[pb.StreamOutputResponse], Awaitable[None]],
        room: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        job = self._job(identity, Action.STREAM, request.job_id)
        quota = self.manager.policy.now.quotas.of(identity.name).streams
        if self.streams_by[identity.name] >= quota:
            raise errors.ResourceExhausted(refusal(quota, "open output streams", identity.name))
        self.streams_by[identity.name] += 1
        self.active_streams += 1
        self._streams_idle = trio.Event() if self.active_streams == 1 else self._streams_idle
        try:
            only = STREAM_FROM_PB.get(request.only)
            output = self.manager.output(
                job, request.offset, only, request.tail_lines, request.no_follow, room
            )
            async with contextlib.aclosing(output):  # its file closes when the client leaves
                async for chunks in output:
                    if chunks:
                        message = chunks_to_pb(chunks)
                        self.metrics.bytes_streamed += sum(len(c.data) for c in chunks)
                        chunks.clear()  # the follower's own copy: not held while we wait
                        await send(message)
                        del message
            if request.no_follow:
                final = self.manager.find(job.id) or job
            else:
                final = await self.manager.wait_finished(job)
            await send(pb.StreamOutputResponse(final=job_to_pb(final)))
        finally:
            self.streams_by[identity.name] -= 1
            if not self.streams_by[identity.name]:
                del self.streams_by[identity.name]
            self.active_streams -= 1
            if self.active_streams == 0:
                self._streams_idle.set()

    async def wait_streams_idle(self) -> None:
        await self._streams_idle.wait()
