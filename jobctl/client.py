"""A small typed asyncio client for the jobd API, built on grpclib.

    async with JobClient.connect("localhost:9090", cacert="ca/ca.crt",
                                 cert="ca/client_0.pem") as client:
        job = await client.start(["sleep", "5"])
        async with contextlib.aclosing(client.stream(job.id)) as messages:
            async for message in messages:
                ...

Every failure surfaces as a :class:`ClientError`, never as a grpclib, ssl or socket exception:

    ClientError
    ├── AddressError        the server address is not HOST:PORT (also a ValueError)
    ├── CertificateError    the CA, certificate or key cannot be loaded
    ├── ConnectError        the server cannot be reached, or the connection broke
    │   └── TLSError        the TLS handshake failed
    └── ServerError         the server answered with a gRPC status other than OK;
        │                   one subclass per status, see STATUS_ERRORS
        ├── NotFound, PermissionDenied, Unauthenticated, InvalidArgument, OutOfRange,
        ├── FailedPrecondition, AlreadyExists, ResourceExhausted, Aborted, Cancelled,
        └── DeadlineExceeded, Unimplemented, Unavailable, Internal, Unknown, DataLoss
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self, TypeAlias

from grpclib.client import Channel, Handler
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.protocol import H2Protocol
from h2.settings import SettingCodes

from jobd.api import grpclib_private
from jobd.api.tls import TLSConfigError, client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SERVER",
    "PAGE_SIZE",
    "STATUS_ERRORS",
    "Aborted",
    "AddressError",
    "AlreadyExists",
    "Cancelled",
    "CertificateError",
    "ClientError",
    "ConnectError",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Isolation",
    "Job",
    "JobClient",
    "Limits",
    "ListJobsResponse",
    "NotFound",
    "OutOfRange",
    "OutputStream",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "StreamOutputResponse",
    "TLSError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_for_status",
    "parse_server",
    "translate_error",
]

DEFAULT_PORT = 9090
DEFAULT_SERVER = f"localhost:{DEFAULT_PORT}"

# Jobs asked for per ListJobs call when following pages (the server's default; it allows 10000).
PAGE_SIZE = 1000

Job: TypeAlias = pb.Job
Limits: TypeAlias = pb.Limits
Isolation: TypeAlias = pb.Isolation
ListJobsResponse: TypeAlias = pb.ListJobsResponse
StreamOutputResponse: TypeAlias = pb.StreamOutputResponse
OutputStream: TypeAlias = pb.OutputStream.ValueType


class ClientError(Exception):
    """Base of every error raised by :class:`JobClient`; ``str()`` is one readable line."""


class AddressError(ClientError, ValueError):
    """The server address cannot be parsed."""


class CertificateError(ClientError):
    """The CA certificate, client certificate or key cannot be loaded."""


class ConnectError(ClientError):
    """The server cannot be reached, or the connection to it broke."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message)
        self.server = server


class TLSError(ConnectError):
    """The TLS handshake failed: untrusted server, wrong host name, or our certificate refused."""


class ServerError(ClientError):
    """The server answered with a non-OK gRPC status; ``message`` is the server's own text."""

    status: ClassVar[Status] = Status.UNKNOWN

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @property
    def label(self) -> str:
        return self.status.name.lower().replace("_", " ")

    def __str__(self) -> str:
        return f"{self.label}: {self.message}" if self.message else self.label


class Cancelled(ServerError):
    status = Status.CANCELLED


class Unknown(ServerError):
    status = Status.UNKNOWN


class InvalidArgument(ServerError):
    status = Status.INVALID_ARGUMENT


class DeadlineExceeded(ServerError):
    status = Status.DEADLINE_EXCEEDED


class NotFound(ServerError):
    status = Status.NOT_FOUND


class AlreadyExists(ServerError):
    status = Status.ALREADY_EXISTS


class PermissionDenied(ServerError):
    status = Status.PERMISSION_DENIED


class ResourceExhausted(ServerError):
    status = Status.RESOURCE_EXHAUSTED


class FailedPrecondition(ServerError):
    status = Status.FAILED_PRECONDITION


class Aborted(ServerError):
    status = Status.ABORTED


class OutOfRange(ServerError):
    status = Status.OUT_OF_RANGE


class Unimplemented(ServerError):
    status = Status.UNIMPLEMENTED


class Internal(ServerError):
    status = Status.INTERNAL


class Unavailable(ServerError):
    status = Status.UNAVAILABLE


class DataLoss(ServerError):
    status = Status.DATA_LOSS


class Unauthenticated(ServerError):
    status = Status.UNAUTHENTICATED


STATUS_ERRORS: Mapping[Status, type[ServerError]] = {
    cls.status: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
        PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
        Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated,
    )
}  # fmt: skip


def error_for_status(status: Status, message: str | None = None) -> ServerError:
    """The :class:`ServerError` for a gRPC status (``UNKNOWN``'s class for anything unmapped)."""
    return STATUS_ERRORS.get(status, Unknown)(message or "")


def parse_server(server: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` or ``[IPV6][:PORT]`` into host and port; raise AddressError."""

    def bad(why: str) -> AddressError:
        return AddressError(f"invalid server address {server!r}: {why}")

    port_text: str | None
    if server.startswith("["):
        host, bracket, rest = server[1:].partition("]")
        if not bracket:
            raise bad("missing ']'")
        if rest and not rest.startswith(":"):
            raise bad("expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    elif server.count(":") > 1:
        raise bad("write an IPv6 address in brackets, e.g. [::1]:9090")
    else:
        host, colon, port_text = server.partition(":")
        if not colon:
            port_text = None
    if not host or host.strip() != host:
        raise bad("missing host")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise bad("the port must be a number from 1 to 65535")
    return host, int(port_text)


_TRANSLATED = (GRPCError, OSError, StreamTerminatedError, ProtocolError)
_BROKE = (StreamTerminatedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def translate_error(exc: BaseException, server: str, *, answered: bool = True) -> ClientError:
    """The :class:`ClientError` for an exception raised by grpclib, ssl or the socket layer.

    ``answered`` says whether the server has answered anything on this channel: a connection
    dropped before that is most often the server refusing our certificate, because in TLS 1.3
    the client finishes its side of the handshake before the server has checked it.
    """
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, GRPCError):
        return error_for_status(exc.status, exc.message)
    if isinstance(exc, ssl.SSLError):
        reason = _ssl_reason(exc)
        return TLSError(f"TLS handshake failed with {server}: {reason}", server=server)
    if isinstance(exc, _BROKE):
        reason = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        if answered:
            return ConnectError(f"connection to {server} broke: {reason}", server=server)
        return ConnectError(
            f"connection to {server} closed before any answer: {reason} "
            "(does the server trust the CA that signed the client certificate?)",
            server=server,
        )
    if isinstance(exc, OSError):  # refused, DNS failures, unreachable networks, ...
        return ConnectError(f"cannot connect to {server}: {_os_reason(exc)}", server=server)
    return ClientError(f"gRPC protocol error talking to {server}: {exc}")


def _os_reason(exc: OSError) -> str:
    # asyncio words a refusal "Connect call failed ('127.0.0.1', 9090)", and one per address
    # joined as "Multiple exceptions: ..." when a name resolves to several: say what errno says.
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    if exc.strerror:  # getaddrinfo's errors carry negative EAI_* numbers
        return exc.strerror
    errnos = {int(n) for n in re.findall(r"\[Errno (\d+)\]", str(exc))}
    if len(errnos) == 1:
        return os.strerror(errnos.pop())
    return str(exc) or type(exc).__name__


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    reason = getattr(exc, "reason", None)  # set by the ssl module, absent on a bare SSLError
    if reason:
        return str(reason).lower().replace("_", " ")
    return exc.strerror or str(exc)


# The largest HTTP/2 frame jobctl accepts. h2's default, 16 KiB, cuts a 256 KiB output
# message into 16 frames that both ends' Python h2 parse, account and hand on one by one;
# 64 KiB frames carry a 1 GiB stream ~20 % faster (docs/perf-notes/lab.md). Larger ones are slower
# again: h2 joins a frame's TLS records by copying them.
MAX_FRAME_SIZE = 64 * 1024


# h2 formats every frame it receives, and hyperframe's repr of a DATA frame copies and
# hex-encodes its body: see grpclib_private.quiet_data_frame_repr.
grpclib_private.quiet_data_frame_repr()


class _Protocol(H2Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Sent right after grpclib's own SETTINGS; h2 applies it once the server acknowledges.
        grpclib_private.h2_of(self.connection).update_settings(
            {SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE})
        self.connection.flush()


class _Channel(Channel):
    """grpclib's channel, asking for larger frames (grpclib has no setting for it): its
    protocol factory, a private hook, is overridden (see jobd.api.grpclib_private)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        grpclib_private.check_client()  # a few microseconds: names on classes
        super().__init__(*args, **kwargs)

    def _protocol_factory(self) -> H2Protocol:
        return _Protocol(Handler(), *grpclib_private.channel_configs(self))


class JobClient:
    """The jobd API over one grpclib channel; create it with :meth:`connect`."""

    def __init__(self, channel: Channel, server: str) -> None:
        self._stub = JobServiceStub(channel)
        self._answered = False
        self.server = server

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except _TRANSLATED as exc:
            self._answered = self._answered or isinstance(exc, GRPCError)
            raise translate_error(exc, self.server, answered=self._answered) from exc
        self._answered = True

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        server: str = DEFAULT_SERVER,
        *,
        cacert: str | Path,
        cert: str | Path,
        key: str | Path | None = None,
        server_name: str | None = None,
    ) -> AsyncIterator[Self]:
        """Open a channel to ``server`` (``HOST:PORT``) with mutual TLS; close it on exit.

        The connection itself is made by the first call, so connection and handshake errors
        are raised there. ``server_name`` overrides the name the server certificate must
        carry (default: the host).
        """
        host, port = parse_server(server)
        try:
            ctx = client_context(Path(cacert), Path(cert), Path(key) if key else None)
        except TLSConfigError as exc:
            raise CertificateError(str(exc)) from exc
        config = Configuration(ssl_target_name_override=server_name) if server_name else None
        channel = _Channel(host, port, ssl=ctx, config=config)
        try:
            yield cls(channel, server)
        finally:
            channel.close()

    async def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        limits: Limits | None = None,
        isolation: Isolation | None = None,
    ) -> Job:
        """Start ``argv`` (no shell); answers once it runs or has failed to start.

        ``limits`` left unset (or fields of it) take the server's defaults; one above the
        caller's role maximum raises InvalidArgument, one the server cannot enforce
        FailedPrecondition. ``isolation`` None takes the role's default namespaces; an
        ``Isolation`` (all false: none) asks for exactly those: less than the role may have
        raises PermissionDenied, one the server cannot create FailedPrecondition.
        """
        request = pb.StartJobRequest(
            argv=list(argv), env=dict(env or {}), cwd=cwd, limits=limits, isolation=isolation
        )
        with self._errors():
            response = await self._stub.StartJob(request)
        job = response.job
        if not job.id:
            job.id = response.job_id
        return job

    async def stop(self, job_id: str, grace: float | None = None) -> Job:
        """Stop a job (SIGTERM, SIGKILL after ``grace`` seconds) and return its final state."""
        request = pb.StopJobRequest(job_id=job_id)
        if grace is not None:
            request.grace.FromNanoseconds(round(grace * 1e9))
        with self._errors():
            return await self._stub.StopJob(request)

    async def status(self, job_id: str) -> Job:
        with self._errors():
            return await self._stub.GetJob(pb.GetJobRequest(job_id=job_id))

    async def stream(
        self,
        job_id: str,
        offset: int = 0,
        *,
        only: OutputStream = pb.OUTPUT_STREAM_UNSPECIFIED,
        tail_lines: int = 0,
        no_follow: bool = False,
    ) -> AsyncGenerator[StreamOutputResponse, None]:
        """The job's output from ``offset``, live until it ends; the last message has ``final``.

        ``offset`` is 0 or a chunk's ``next_offset`` (to resume); ``only`` keeps one stream;
        ``tail_lines`` starts that many lines before the end of the output there is now
        instead of at ``offset`` (give one or the other). ``no_follow`` stops at the end of
        the output there is now; ``final`` is then the job's status at that point.

        Leaving early cancels the call on the server only once the generator is closed, so
        wrap it in :func:`contextlib.aclosing` when you may stop before the end.
        """
        request = pb.StreamOutputRequest(
            job_id=job_id, offset=offset, only=only, tail_lines=tail_lines, no_follow=no_follow
        )
        with self._errors():
            async with self._stub.StreamOutput.open() as call:
                await call.send_message(request, end=True)
                async for message in call:
                    self._answered = True
                    yield message

    async def list_page(
        self, owner: str = "", limit: int = 0, page_token: str = ""
    ) -> ListJobsResponse:
        """One page of jobs, newest first: at most ``limit`` (0: the server's default, 1000),
        after the page that handed out ``page_token``. ``next_page_token`` is set when older
        jobs remain."""
        request = pb.ListJobsRequest(owner=owner, limit=limit, page_token=page_token)
        with self._errors():
            return await self._stub.ListJobs(request)

    # Last: inside the class body, `list` names this method from here on.
    async def list(self, owner: str = "", limit: int | None = None) -> builtins.list[Job]:
        """Jobs visible to the caller, newest first; ``owner`` narrows them to one identity.

        At most ``limit`` jobs; None follows the pages to the oldest job.
        """
        jobs: builtins.list[Job] = []
        token = ""
        while limit is None or len(jobs) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(jobs))
            page = await self.list_page(owner, size, token)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
        return jobs
