"""Property-based abuse tests: random and malformed requests on the wire against one live jobd.

Every call must be answered with a gRPC status (OK or an error, never a hang), the daemon must
stay up and serve other calls, and another client's job must be unaffected.

Raw bytes are sent through grpclib with a pass-through codec (``RawCodec``), so the request
need not be a valid protobuf message at all: non-UTF-8 "strings", truncated fields, random
bytes, another RPC's request type, empty and huge messages.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Certs, Daemon, collect, start, stop
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = 5.0  # seconds: a call not answered by then is a hang
SERVICE = "/jobd.v1.JobService/"
RPCS = {
    "StartJob": (Cardinality.UNARY_UNARY, pb.StartJobRequest),
    "StopJob": (Cardinality.UNARY_UNARY, pb.StopJobRequest),
    "GetJob": (Cardinality.UNARY_UNARY, pb.GetJobRequest),
    "ListJobs": (Cardinality.UNARY_UNARY, pb.ListJobsRequest),
    "StreamOutput": (Cardinality.UNARY_STREAM, pb.StreamOutputRequest),
}
REQUEST_TYPES = [t for _, t in RPCS.values()]
FUZZERS = ["client_0", "client_1", "mallory"]
REF_OUTPUT = b"ref 1\nref 2\nref 3\n"
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip


class RawCodec(CodecBase):
    """Sends ``bytes`` as they are (messages are serialized); hands back raw reply bytes."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, (bytes, bytearray)):
            return bytes(message)
        return bytes(message.SerializeToString())

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


# The protobuf wire format, built by hand so that any bytes can go anywhere.


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, data: bytes) -> bytes:
    return key(field, 2) + varint(len(data)) + data


def message_strategy(depth: int = 2) -> st.SearchStrategy[bytes]:
    """Messages that are well formed on the wire with arbitrary contents in every field."""
    field = st.integers(1, 20)
    text = st.one_of(
        st.binary(max_size=64),  # non-UTF-8 and NUL-laden
        st.text(max_size=32).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"\x00", b"a\x00b", b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\x80", b""]),
    )
    nested = message_strategy(depth - 1) if depth else st.binary(max_size=16)
    entry = st.one_of(
        st.builds(
            lambda f, v: key(f, 0) + varint(v), field, st.integers(-(1 << 63), (1 << 64) - 1)
        ),
        st.builds(lambda f, d: key(f, 1) + d, field, st.binary(min_size=8, max_size=8)),
        st.builds(lambda f, d: key(f, 5) + d, field, st.binary(min_size=4, max_size=4)),
        st.builds(length_delimited, field, text),
        st.builds(length_delimited, field, nested),
    )
    return st.lists(entry, max_size=8).map(b"".join)


def huge(n_bytes: int, *, fill: bytes) -> bytes:
    return length_delimited(1, fill * (n_bytes // len(fill)))


MALFORMED = st.one_of(
    st.just(b""),
    st.binary(max_size=256),  # random bytes as the whole message
    message_strategy(),
    # Wrong types: a valid message of one RPC's request type, sent to any RPC.
    st.builds(
        lambda t, s: t(
            **{{pb.StartJobRequest: "cwd", pb.ListJobsRequest: "owner"}.get(t, "job_id"): s}
        ).SerializeToString(),
        st.sampled_from(REQUEST_TYPES),
        st.text(max_size=40),
    ),
    # Truncated: a length prefix promising more than follows; a varint that never ends.
    st.builds(lambda d: key(1, 2) + varint(len(d) + 100) + d, st.binary(max_size=32)),
    st.binary(max_size=16).map(lambda d: key(2, 0) + b"\xff" * 11 + d),
    st.integers(1, 1 << 29).map(lambda f: key(f, 3)),  # deprecated groups, never closed
    st.integers(0, 7).map(lambda w: varint(1 << 3 | w) + b"\x01"),
    # Huge: a big field (within and over the 4 MiB message bound), and many small ones.
    st.sampled_from([64 << 10, 1 << 20, (4 << 20) + 1, 6 << 20]).flatmap(
        lambda n: st.sampled_from([b"\x00", b"\xff", b"a", b"/\x00\xc3"]).map(
            lambda fill: huge(n, fill=fill)
        )
    ),
    st.integers(1000, 20000).map(lambda n: length_delimited(1, b"x") * n),
)


class Session:
    """One event loop with connections to the daemon, shared by every example of the module."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.loop = asyncio.new_event_loop()
        self.channels: dict[str, Channel] = {}
        self.known_job = ""
        self.ref_job = ""

    def channel(self, who: str) -> Channel:
        if who not in self.channels:
            ctx = client_context(self.daemon.certs.ca, self.daemon.certs.client(who))
            self.channels[who] = Channel("127.0.0.1", self.daemon.port, ssl=ctx, codec=RawCodec())
        return self.channels[who]

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    async def call(self, who: str, rpc: str, payload: Any) -> tuple[Status, list[bytes]]:
        """The call's status and reply messages; a hang fails the test."""
        cardinality, _ = RPCS[rpc]
        replies: list[bytes] = []
        try:
            async with self.channel(who).request(
                SERVICE + rpc, cardinality, None, None, timeout=CALL_TIMEOUT
            ) as stream:
                await stream.send_message(payload, end=True)
                async for reply in stream:
                    replies.append(reply)
        except GRPCError as error:
            return error.status, replies
        except TimeoutError:
            pytest.fail(
                f"{rpc} as {who} was not answered within {CALL_TIMEOUT}s: {payload[:200]!r}"
            )
        return Status.OK, replies

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.loop.run_until_complete(asyncio.sleep(0.1))
        self.loop.close()


def harmless(payload: bytes) -> bytes:
    """A StartJob payload that would run a real program gets argv[0] = "true" in front."""
    try:
        request = pb.StartJobRequest.FromString(payload)
    except (DecodeError, ValueError, RuntimeError):
        return payload
    if not request.argv:
        return payload
    if "/" in request.argv[0] or shutil.which(request.argv[0]) or request.argv[0] in {".", ".."}:
        return length_delimited(1, b"true") + payload
    return payload


@pytest.fixture(scope="module")
def session(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    daemon = Daemon(certs, tmp_path_factory.mktemp("fuzz") / "state").start()
    session = Session(daemon)
    stopped_ok = False
    try:
        # The reference job of another client, started before any fuzzing; and a known job.
        session.ref_job = daemon.run(
            "client_2",
            lambda stub: start(stub, ["sh", "-c", "printf 'ref %s\\n' 1 2 3; exec sleep 600"]),
        )

        async def known(stub: Any) -> str:
            job_id = await start(stub, ["echo", "known"])
            out, _, final, _ = await collect(stub, job_id)
            assert out == b"known\n" and final.result.exit_code == 0
            return job_id

        session.known_job = daemon.run("client_0", known)
        yield session
        stopped_ok = True
    finally:
        try:
            if stopped_ok:
                cleanup(session)
        finally:
            session.close()
            code = daemon.stop()
    daemon.check_exit(code)


def decodes(rpc: str, payload: bytes) -> bool:
    try:
        RPCS[rpc][1].FromString(payload)
    except DecodeError:
        return False
    return True


def check_status(rpc: str, payload: bytes, status: Status) -> None:
    """Nothing is an internal error; an undecodable request is refused as invalid (or, past
    the size bound, as too large)."""
    assert status != Status.INTERNAL, (rpc, payload[:200])
    if not decodes(rpc, payload):
        assert status in (Status.INVALID_ARGUMENT, Status.RESOURCE_EXHAUSTED), (rpc, status)


def cleanup(session: Session) -> None:
    """Check the reference job last, then stop every job the fuzzing managed to start."""

    async def check_ref(stub: Any) -> None:
        job = await stub.GetJob(pb.GetJobRequest(job_id=session.ref_job))
        assert job.state == pb.JOB_STATE_RUNNING, job
        out = bytearray()
        async with stub.StreamOutput.open() as stream:
            await stream.send_message(
                pb.StreamOutputRequest(job_id=session.ref_job, no_follow=True), end=True
            )
            async for msg in stream:
                out += b"".join(c.data for c in msg.chunks)
        assert bytes(out) == REF_OUTPUT
        final = await stop(stub, session.ref_job)
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED

    session.daemon.run("client_2", check_ref)

    async def stop_all(stub: Any) -> None:
        listed = await stub.ListJobs(pb.ListJobsRequest(limit=10000))
        for job in listed.jobs:
            if job.state != pb.JOB_STATE_FINISHED:
                await stop(stub, job.id)

    session.daemon.run("client_0", stop_all)


def assert_still_serving(session: Session) -> None:
    async def probe() -> None:
        status, replies = await session.call(
            "client_0", "GetJob", pb.GetJobRequest(job_id=session.known_job)
        )
        assert status == Status.OK
        job = pb.Job.FromString(replies[0])
        assert job.id == session.known_job and job.result.exit_code == 0
        status, replies = await session.call(
            "client_2", "GetJob", pb.GetJobRequest(job_id=session.ref_job)
        )
        assert status == Status.OK
        assert pb.Job.FromString(replies[0]).state == pb.JOB_STATE_RUNNING

    session.run(probe())
    assert session.daemon.proc is not None and session.daemon.proc.poll() is None


def check_answer(rpc: str, status: Status, replies: list[bytes]) -> None:
    """An OK answer carries well-formed replies of the RPC's reply type."""
    if status != Status.OK:
        return
    if rpc == "StreamOutput":
        messages = [pb.StreamOutputResponse.FromString(r) for r in replies]
        assert messages and messages[-1].HasField("final")
    else:
        assert len(replies) == 1
        reply_type = {"StartJob": pb.StartJobResponse, "ListJobs": pb.ListJobsResponse}
        reply_type.get(rpc, pb.Job).FromString(replies[0])


@SETTINGS
@given(rpc=st.sampled_from(sorted(RPCS)), who=st.sampled_from(FUZZERS), payload=MALFORMED)
def test_malformed_requests_get_a_status(
    session: Session, rpc: str, who: str, payload: bytes
) -> None:
    if rpc == "StartJob":
        payload = harmless(payload)
    status, replies = session.run(session.call(who, rpc, payload))
    assert isinstance(status, Status)
    check_status(rpc, payload, status)
    check_answer(rpc, status, replies)
    assert_still_serving(session)


@SETTINGS
@given(
    rpc=st.sampled_from(sorted(RPCS)),
    who=st.sampled_from(FUZZERS),
    job_id=st.one_of(st.binary(max_size=80), st.just(b""), st.just(b"known")),
    extra=message_strategy(depth=1),
)
def test_job_ids_of_any_bytes(
    session: Session, rpc: str, who: str, job_id: bytes, extra: bytes
) -> None:
    """Field 1 (the job id; argv / owner elsewhere) as arbitrary bytes, then other fields."""
    if job_id == b"known":
        job_id = session.known_job.encode()  # stopping it is a no-op: it has ended
    payload = length_delimited(1, job_id) + extra
    if rpc == "StartJob":
        payload = harmless(payload)
    status, replies = session.run(session.call(who, rpc, payload))
    check_status(rpc, payload, status)
    check_answer(rpc, status, replies)
    if rpc == "GetJob" and job_id == session.known_job.encode() and not extra and who == "client_0":
        assert status == Status.OK
    assert_still_serving(session)


def test_bounds_and_type_errors_are_reported(session: Session) -> None:
    """Some fixed inputs whose answer is known, sent through the same raw path."""

    async def scenario() -> None:
        over = huge((4 << 20) + 1, fill=b"a")
        for rpc in RPCS:
            status, _ = await session.call("client_0", rpc, over)
            assert status in (Status.INVALID_ARGUMENT, Status.RESOURCE_EXHAUSTED), (rpc, status)
        status, _ = await session.call("client_0", "StartJob", b"")
        assert status == Status.INVALID_ARGUMENT
        nul = pb.StartJobRequest(argv=["echo", "a\x00b"]).SerializeToString()
        status, _ = await session.call("client_0", "StartJob", nul)
        assert status == Status.INVALID_ARGUMENT

    session.run(scenario())
    assert_still_serving(session)


def test_undecodable_request_is_invalid_argument(session: Session) -> None:
    bad_utf8 = length_delimited(1, b"\xff\xfe")
    before = sum("Traceback" in line for line in session.daemon.log)
    for rpc in RPCS:
        status, _ = session.run(session.call("client_0", rpc, bad_utf8))
        assert status == Status.INVALID_ARGUMENT, (rpc, status)
    assert_still_serving(session)
    assert sum("Traceback" in line for line in session.daemon.log) == before


def test_raw_path_works_for_valid_requests(session: Session) -> None:
    """The pass-through codec itself: a valid message gets a valid answer."""
    status, replies = session.run(
        session.call("client_0", "GetJob", pb.GetJobRequest(job_id=session.known_job))
    )
    assert status == Status.OK and pb.Job.FromString(replies[0]).id == session.known_job
