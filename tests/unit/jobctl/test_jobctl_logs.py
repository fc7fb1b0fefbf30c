"""jobctl logs against the fake server: byte-exact output, offsets, resuming, the end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakeserver import (
    NASTY,
    FakeJobService,
    chunk,
    finished,
    make_job,
    mixed_output,
    stream_requests,
)
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from jobctl import cli
from jobctl.client import (
    ConnectError,
)
from jobd.v1 import jobs_pb2 as pb


def test_logs_are_byte_exact(
    jobctl: Any, service: FakeJobService, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    job = finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0)
    service.add(
        job,
        pb.StreamOutputResponse(chunks=[chunk(b"out1\n"), chunk(NASTY, pb.OUTPUT_STREAM_STDERR)]),
        pb.StreamOutputResponse(chunks=[chunk(NASTY), chunk(b"")]),
    )
    assert jobctl("logs", "j1") == 0
    assert capsysbinary.readouterr() == (b"out1\n" + NASTY, NASTY)
    assert jobctl("logs", "-f", "j1") == 0
    assert capsysbinary.readouterr() == (b"out1\n" + NASTY, NASTY)


def test_logs_of_a_running_job_stop_at_what_existed(
    jobctl: Any, service: FakeJobService, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # The server knows where the output ended when asked (no_follow) and ends the stream
    # there with the job's status: a client that followed instead would wait for ABORTED.
    service.add(
        make_job(output_bytes=8),
        pb.StreamOutputResponse(chunks=[chunk(b"ab"), chunk(b"cd", pb.OUTPUT_STREAM_STDERR)]),
        pb.StreamOutputResponse(chunks=[chunk(b"efgh")]),
    )
    assert jobctl("logs", "j1") == 0
    assert capsysbinary.readouterr() == (b"abefgh", b"cd")
    [request] = service.requests  # one call: no GetJob first
    assert request == pb.StreamOutputRequest(job_id="j1", no_follow=True)
    assert service.stream_ended.is_set()


def test_logs_of_a_finished_job_ask_the_server_to_choose(
    jobctl: Any, service: FakeJobService, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    service.add(finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0), *mixed_output())

    assert jobctl("logs", "--stdout", "j1") == 0
    assert capsysbinary.readouterr() == (b"o1\no2\no3\no4\no5\n", b"")
    assert stream_requests(service)[-1].only == pb.OUTPUT_STREAM_STDOUT

    assert jobctl("logs", "-f", "--stderr", "j1") == 0
    assert capsysbinary.readouterr() == (b"", b"e1\ne2\ne3\ne4")
    assert stream_requests(service)[-1].only == pb.OUTPUT_STREAM_STDERR

    assert jobctl("logs", "--tail", "2", "j1") == 0
    capsysbinary.readouterr()
    request = stream_requests(service)[-1]
    assert (request.tail_lines, request.offset, request.only) == (2, 0, 0)

    # resume after the first chunk: "o1\no2\n" took 9 + 6 bytes of the log
    assert jobctl("logs", "-f", "--offset", "15", "j1") == 0
    assert capsysbinary.readouterr() == (b"o3\no4\no5\n", b"e1\ne2\ne3\ne4")
    assert stream_requests(service)[-1].offset == 15


@pytest.mark.parametrize("state", ["running", "finished"])
@pytest.mark.parametrize(
    ("argv", "request_fields", "out", "err"),
    [
        ([], {}, b"o1\no2\no3\no4\no5\n", b"e1\ne2\ne3\ne4"),
        (["--stdout"], {"only": 1}, b"o1\no2\no3\no4\no5\n", b""),
        (["--stderr"], {"only": 2}, b"", b"e1\ne2\ne3\ne4"),
        (["--offset", "15"], {"offset": 15}, b"o3\no4\no5\n", b"e1\ne2\ne3\ne4"),
        (["--offset", "38", "--stderr"], {"offset": 38, "only": 2}, b"", b"e2\ne3\ne4"),
        (["--offset", "80"], {"offset": 80}, b"", b""),  # the end
        # the fake server does not cut a tail: only what is asked is checked
        (["--tail", "3"], {"tail_lines": 3}, None, None),
        (["--stdout", "--tail", "2"], {"only": 1, "tail_lines": 2}, None, None),
    ],
)
def test_logs_leave_the_choice_to_the_server(
    jobctl: Any,
    service: FakeJobService,
    capsysbinary: pytest.CaptureFixture[bytes],
    state: str,
    argv: list[str],
    request_fields: dict[str, Any],
    out: bytes | None,
    err: bytes | None,
) -> None:
    """Running or not, --stdout/--stderr/--offset/--tail go to the server as they are."""
    if state == "running":
        service.add(make_job(), *mixed_output())
    else:
        service.add(finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0), *mixed_output())
    assert jobctl("logs", *argv, "j1") == 0
    captured = capsysbinary.readouterr()
    if out is not None:
        assert captured == (out, err)
    [request] = service.requests
    assert request == pb.StreamOutputRequest(job_id="j1", no_follow=True, **request_fields)


@pytest.mark.parametrize("offset", ["1", "16", "67"])
def test_logs_refuse_an_offset_inside_a_chunk(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str], offset: str
) -> None:
    service.add(make_job(), *mixed_output())
    for argv in (["logs"], ["logs", "-f"]):
        assert jobctl(*argv, "--offset", offset, "j1") == cli.EXIT_FAILED
        assert capsys.readouterr() == (
            "",
            f"jobctl: invalid argument: offset {offset} is not where a chunk starts: give 0 or "
            "a next_offset received before\n",
        )


def test_logs_note_dropped_output(
    jobctl: Any, service: FakeJobService, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    job = finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0)
    job.output_dropped_bytes = 12345
    job.output_error = "output cap of 1 GiB reached; later output dropped"
    service.add(job, pb.StreamOutputResponse(chunks=[chunk(b"kept")]))
    note = (
        b"jobctl: note: output truncated: 12345 bytes dropped "
        b"(output cap of 1 GiB reached; later output dropped)\n"
    )
    for argv in (["logs", "j1"], ["logs", "-f", "j1"], ["logs", "--stdout", "j1"]):
        assert jobctl(*argv) == 0
        assert capsysbinary.readouterr() == (b"kept", note)
    service.add(make_job(id="j2", output_bytes=4, output_dropped_bytes=7))
    service.output["j2"] = service.output["j1"]
    assert jobctl("logs", "j2") == 0
    assert capsysbinary.readouterr() == (
        b"kept",
        b"jobctl: note: output truncated: 7 bytes dropped\n",
    )


def test_logs_name_the_offset_to_resume_from(
    jobctl: Any, service: FakeJobService, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    service.add(make_job(), *mixed_output())
    service.break_after = GRPCError(Status.UNAVAILABLE, "jobd is shutting down")
    assert jobctl("logs", "-f", "--stdout", "j1") == cli.EXIT_CONNECT
    assert capsysbinary.readouterr() == (
        b"o1\no2\no3\no4\no5\n",
        b"jobctl: unavailable: jobd is shutting down "
        b"(for the rest: jobctl logs -f --stdout --offset 80 j1)\n",
    )
    assert jobctl("logs", "-f", "--stdout", "--offset", "80", "j1") == cli.EXIT_CONNECT
    assert capsysbinary.readouterr() == (b"", b"jobctl: unavailable: jobd is shutting down\n")


def test_logs_name_the_offset_when_the_connection_breaks(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    from jobctl import commands

    class Broken:
        async def stream(self, job_id: str, offset: int = 0, **kw: Any) -> Any:
            yield pb.StreamOutputResponse(chunks=[pb.OutputChunk(data=b"x", next_offset=10)])
            raise ConnectError("connection to h:1 broke: Connection reset by peer", server="h:1")

    with pytest.raises(ConnectError) as info:
        asyncio.run(commands.follow(Broken(), "j1", commands.Output()))  # type: ignore[arg-type]
    assert str(info.value) == (
        "connection to h:1 broke: Connection reset by peer "
        "(for the rest: jobctl logs --offset 10 j1)"
    )
    assert info.value.server == "h:1"
    assert capsysbinary.readouterr() == (b"x", b"")


def test_logs_of_a_stream_that_ends_without_the_job(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobctl import commands

    class Short:
        async def stream(self, job_id: str, offset: int = 0, **kw: Any) -> Any:
            yield pb.StreamOutputResponse(chunks=[pb.OutputChunk(data=b"", next_offset=10)])

    with pytest.raises(
        commands.CommandFailed, match=r"ended early \(for the rest: jobctl logs --offset 10 j1\)"
    ):
        asyncio.run(commands.follow(Short(), "j1", commands.Output()))  # type: ignore[arg-type]


def test_logs_of_a_silent_running_job_return_at_once(
    jobctl: Any, service: FakeJobService, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    service.add(make_job(output_bytes=0))
    assert jobctl("logs", "j1") == 0
    assert capsysbinary.readouterr() == (b"", b"")
    assert stream_requests(service)[-1].no_follow


def test_logs_of_a_missing_job(jobctl: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert jobctl("logs", "-f", "nope") == cli.EXIT_FAILED
    assert capsys.readouterr().err == "jobctl: not found: job nope not found\n"


