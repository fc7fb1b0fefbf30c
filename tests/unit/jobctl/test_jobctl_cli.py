"""jobctl without a daemon: parsing, rendering, error mapping, start-up imports, and the whole
CLI against a small fake JobService served by grpclib over mutual TLS on 127.0.0.1.

All tests are plain sync functions (the suite runs pytest-trio in trio_mode; jobctl itself is
asyncio, and each `_main` call runs its own `asyncio.run`). The fake server runs in a thread
with its own asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.server import Server, Stream
from helpers_unit import run_python
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import sigint_default
from jobctl import cli, render, units
from jobctl.client import (
    STATUS_ERRORS,
    AddressError,
    CertificateError,
    ClientError,
    ConnectError,
    NotFound,
    ServerError,
    TLSError,
    error_for_status,
    parse_server,
    translate_error,
)
from jobd.api.tls import server_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceBase

REPO = Path(__file__).resolve().parents[3]


# --- argument parsing -------------------------------------------------------------------------


def parse(*argv: str, environ: dict[str, str] | None = None) -> Any:
    return cli.build_parser(environ or {}).parse_args(argv)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["sleep 2"], ["sleep", "2"]),
        (["--", "sleep 2"], ["sleep", "2"]),
        (["sh -c 'echo hi; exit 3'"], ["sh", "-c", "echo hi; exit 3"]),
        (["'/opt/my tool' -v"], ["/opt/my tool", "-v"]),
        (["sleep"], ["sleep"]),
        (["--", "ls", "-l", "--", "x"], ["ls", "-l", "--", "x"]),
        (["echo", "a b"], ["echo", "a b"]),  # several words: never split further
        (["--", "--", "x"], ["--", "x"]),
    ],
)
def test_command_argv(words: list[str], expected: list[str]) -> None:
    assert cli.command_argv(words) == expected


@pytest.mark.parametrize("words", [[], ["--"], ["   "], ["sleep 'unterminated"]])
def test_command_argv_rejects(words: list[str]) -> None:
    with pytest.raises(ValueError, match=r"no command|cannot split"):
        cli.command_argv(words)


def test_start_arguments() -> None:
    words = "start --env A=1 --env B=x=y --env C= --cwd /tmp -- ls -l --env"
    args = parse(*shlex.split(words))
    assert args.command == "start"
    assert args.argv == ["ls", "-l", "--env"]
    assert dict(args.env) == {"A": "1", "B": "x=y", "C": ""}
    assert args.cwd == "/tmp"


def test_start_single_argument_is_split_without_dashes() -> None:
    args = parse("--cacert", "ca/ca.crt", "--cert", "ca/client_0.pem", "start", "sleep 2")
    assert args.argv == ["sleep", "2"]
    assert (args.cacert, args.cert) == ("ca/ca.crt", "ca/client_0.pem")


MiB = 2**20


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (units.parse_cpu, "0.5", 0.5),
        (units.parse_cpu, "50%", 0.5),
        (units.parse_cpu, "500m", 0.5),
        (units.parse_cpu, "2", 2.0),
        (units.parse_cpu, " 1.5 ", 1.5),
        (units.parse_cpu, "250%", 2.5),
        (units.parse_size, "256M", 256 * MiB),
        (units.parse_size, "1G", 2**30),
        (units.parse_size, "512K", 512 * 1024),
        (units.parse_size, "512k", 512 * 1024),
        (units.parse_size, "1048576", MiB),
        (units.parse_size, "1.5G", 3 * 2**29),
        (units.parse_size, "0.5K", 512),
        (units.parse_size, "1GiB", 2**30),
        (units.parse_size, "64MB", 64 * MiB),
        (units.parse_size, "100B", 100),
        (units.parse_size, "2T", 2 * 2**40),
        (units.parse_size, "256 M", 256 * MiB),
        (units.parse_size, str(2**64 - 1), 2**64 - 1),
        (units.parse_size, "0.1K", None),  # 102.4 bytes
        (units.parse_rate, "10M/s", 10 * MiB),
        (units.parse_rate, "10MiB/s", 10 * MiB),
        (units.parse_rate, "4096", 4096),
        (units.parse_count, "64", 64),
        (units.parse_count, str(2**32 - 1), 2**32 - 1),
        (units.parse_device, "254:0", "254:0"),
        (units.parse_device, "/dev/sda", "/dev/sda"),
        (units.parse_device, "/var/lib/jobd", "/var/lib/jobd"),
    ],
)
def test_limit_values(parse: Any, text: str, value: Any) -> None:
    if value is None:
        with pytest.raises(ValueError, match="not a whole number of bytes"):
            parse(text)
    else:
        assert parse(text) == value


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cpu", "0", "invalid CPU limit '0': must be more than 0"),
        ("--cpu", "-1", "invalid CPU limit '-1': must be more than 0"),
        ("--cpu", "0%", "invalid CPU limit '0%': must be more than 0"),
        ("--cpu", "nan", "invalid CPU limit 'nan': must be more than 0"),
        ("--cpu", "inf", "invalid CPU limit 'inf': must be more than 0"),
        ("--cpu", "half", "invalid CPU limit 'half': expected cores such as 0.5, 50% or 500m"),
        ("--cpu", "", "invalid CPU limit ''"),
        ("--cpu", "1 core", "invalid CPU limit '1 core'"),
        ("--memory", "0", "invalid size '0': must be more than 0"),
        ("--memory", "0M", "invalid size '0M': must be more than 0"),
        ("--memory", "-1M", "invalid size '-1M': expected bytes with an optional K, M, G or T"),
        ("--memory", "12X", "invalid size '12X': expected bytes"),
        ("--memory", "1.5", "invalid size '1.5': not a whole number of bytes"),
        ("--memory", "M", "invalid size 'M': expected bytes"),
        ("--memory", "1e6", "invalid size '1e6': expected bytes"),
        ("--memory", str(2**64), f"invalid size '{2**64}': too large"),
        ("--memory", "16777216T", "invalid size '16777216T': too large"),
        ("--io-read-bps", "0", "invalid size '0': must be more than 0"),
        ("--io-write-bps", "fast", "invalid size 'fast'"),
        ("--io-write-bps", "10M/min", "invalid size '10M/min'"),
        ("--io-device", "sda", "invalid device 'sda': expected MAJOR:MINOR (e.g. 8:0) or an abs"),
        ("--io-device", "", "invalid device ''"),
        ("--io-device", "8:", "invalid device '8:'"),
        ("--pids", "0", f"invalid number '0': expected 1 to {2**32 - 1}"),
        ("--pids", "-5", "invalid number '-5'"),
        ("--pids", str(2**32), f"invalid number '{2**32}'"),
        ("--pids", "many", "invalid number 'many': expected a whole number"),
        ("--pids", "1.5", "invalid number '1.5': expected a whole number"),
    ],
)
def test_bad_limit_values_are_usage_errors(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server anywhere: the value is refused before a connection would be made.
    environ = {"JOBCTL_SERVER": "127.0.0.1:1", "JOBCTL_CACERT": "/nonexistent"}
    assert cli._main(["start", f"{option}={value}", "--", "true"], environ=environ) == 2
    out, err = capsys.readouterr()
    assert out == ""
    last = err.splitlines()[-1]
    assert last.startswith(f"jobctl start: error: argument {option}: {message}"), err
    assert "Traceback" not in err


def limits_request(*words: str) -> pb.Limits:
    from jobctl.commands import limits_of

    args = parse("start", *words, "--", "true")
    assert args.argv == ["true"]
    limits: pb.Limits = limits_of(args)
    return limits


def test_limit_options_build_the_request() -> None:
    limits = limits_request(
        "--cpu", "500m", "--memory", "256M", "--io-read-bps", "10M", "--io-write-bps", "1M/s",
        "--io-device", "254:0", "--pids", "64",
    )  # fmt: skip
    assert limits == pb.Limits(
        cpu=0.5,
        memory_bytes=256 * MiB,
        io_read_bps=10 * MiB,
        io_write_bps=MiB,
        io_device="254:0",
        pids=64,
    )
    # What is not given stays unset: the server's default applies.
    limits = limits_request("--memory", "1G")
    assert limits.memory_bytes == 2**30
    for unset in ("cpu", "io_read_bps", "io_write_bps", "pids"):
        assert not limits.HasField(unset)
    assert limits.io_device == ""
    assert limits_request() == pb.Limits()
    # The last of a repeated option wins, as with every other option.
    assert limits_request("--pids", "5", "--pids", "7").pids == 7


def test_start_help_lists_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["start", "--help"], environ={}) == cli.EXIT_OK
    out = capsys.readouterr().out
    for option in ("--cpu CORES", "--memory SIZE", "--io-read-bps SIZE", "--io-write-bps SIZE"):
        assert option in out
    assert "--io-device DEV" in out and "--pids N" in out
    assert "50%, 500m" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "--env", "FOO", "--", "true"], "expected KEY=VALUE, got 'FOO' (no '=')"),
        (["start", "--env", "=x", "--", "true"], "empty KEY"),
        (["start"], "no command given"),
        (["start", "--", "a 'b"], "cannot split"),
        (["stop", "--grace", "-1", "x"], "expected zero or more seconds"),
        (["stop", "--grace", "soon", "x"], "not a number of seconds"),
        (["stop", "--grace", "nan", "x"], "expected zero or more seconds"),
        (["status"], "the following arguments are required: ID"),
        (["list", "--limit", "0"], "expected 1 or more, got '0'"),
        (["list", "--limit", "x"], "not a whole number: 'x'"),
        (["list", "--limit", "5", "--all"], "not allowed with argument"),
        (["logs", "--stdout", "--stderr", "j1"], "not allowed with argument"),
        (["logs", "--tail", "2", "--offset", "9", "j1"], "not allowed with argument"),
        (["logs", "--tail", "0", "j1"], "expected 1 or more"),
        (["logs", "--tail", str(2**32), "j1"], "expected at most 4294967295 lines"),
        (["logs", "--offset", "-1", "j1"], "expected an offset of 0 or more"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(argv, environ={}) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def options(args: Any) -> tuple[str, str, str, str | None]:
    return (args.server, args.cacert, args.cert, args.key)


def test_global_defaults_and_environment() -> None:
    assert options(parse("list")) == ("localhost:9090", "ca/ca.crt", "ca/client_0.pem", None)
    environ = {
        "JOBCTL_SERVER": "[::1]:7000",
        "JOBCTL_CACERT": "c.crt",
        "JOBCTL_CERT": "me.crt",
        "JOBCTL_KEY": "me.key",
    }
    assert options(parse("list", environ=environ)) == ("[::1]:7000", "c.crt", "me.crt", "me.key")
    args = parse("--server", "h:1", "--key", "k", "list", environ=environ)
    assert options(args) == ("h:1", "c.crt", "me.crt", "k")


def test_other_commands_parse() -> None:
    assert parse("stop", "--grace", "2.5", "j1").grace == 2.5
    assert parse("stop", "j1").grace is None
    assert parse("status", "--json", "j1").json
    args = parse("list", "--owner", "bob", "--json")
    assert (args.owner, args.json, args.limit, args.all) == ("bob", True, 50, False)
    assert parse("list", "--limit", "7").limit == 7
    assert parse("list", "--all").all
    args = parse("logs", "j1")
    assert (args.follow, args.only, args.tail, args.offset) == (False, None, 0, 0)
    args = parse("logs", "-f", "--stderr", "--tail", "3", "j1")
    assert (args.follow, args.only, args.tail, args.offset) == (True, "stderr", 3, 0)
    args = parse("logs", "--stdout", "--offset", "123", "-f", "j1")
    assert (args.follow, args.only, args.tail, args.offset) == (True, "stdout", 0, 123)


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["--help"], environ={}) == cli.EXIT_OK
    out = capsys.readouterr().out
    for code in (0, 1, 2, 3, 130, 141):
        assert f"\n  {code} " in out
    assert "JOBCTL_SERVER" in out


# --- HOST:PORT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:9090", ("localhost", 9090)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:9090", ("::1", 9090)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
        ("example.com", ("example.com", 9090)),
        ("[::1]", ("::1", 9090)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":9090",
        "::1:9090",
        "[::1",
        "[::1]9090",
        "[nope]:1",
        "host:",
        "host:0",
        "host:65536",
        "host:http",
        "host:-1",
        "host:\uff19\uff10",
        " host:1",
    ],
)
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(AddressError, match="invalid server address"):
        parse_server(text)


# --- errors and exit codes ---------------------------------------------------------------------


def test_every_grpc_status_maps_to_an_error_and_exit_code() -> None:
    assert set(STATUS_ERRORS) == set(Status) - {Status.OK}
    for status in Status:
        exc = error_for_status(status, "why")
        assert isinstance(exc, ServerError)
        assert str(exc).endswith(": why")
        if status is not Status.OK:
            assert exc.status is status
            assert type(exc).__name__.lower() == status.name.replace("_", "").lower()
        expected = cli.EXIT_CONNECT if status is Status.UNAVAILABLE else cli.EXIT_FAILED
        assert cli.exit_code_for(exc) == expected


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (AddressError("x"), cli.EXIT_USAGE),
        (CertificateError("x"), cli.EXIT_USAGE),
        (ConnectError("x", server="h:1"), cli.EXIT_CONNECT),
        (TLSError("x", server="h:1"), cli.EXIT_CONNECT),
        (ClientError("x"), cli.EXIT_FAILED),
        (RuntimeError("x"), cli.EXIT_FAILED),
    ],
)
def test_exit_codes_of_local_errors(exc: BaseException, code: int) -> None:
    assert cli.exit_code_for(exc) == code


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (GRPCError(Status.NOT_FOUND, "job 1 not found"), NotFound, "not found: job 1 not found"),
        (GRPCError(Status.UNAVAILABLE), ServerError, "unavailable"),
        (
            ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)"),
            ConnectError,
            "cannot connect to h:9: Connection refused",
        ),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 9)"
            ),
            ConnectError,
            "cannot connect to h:9: Connection refused",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            ConnectError,
            "cannot connect to h:9: Name or service not known",
        ),
        (
            ConnectionResetError(104, "reset"),
            ConnectError,
            "connection to h:9 broke: Connection reset by peer",
        ),
        (
            StreamTerminatedError("Connection lost"),
            ConnectError,
            "connection to h:9 broke: Connection lost",
        ),
        (
            ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] unknown ca"),
            TLSError,
            "TLS handshake failed with h:9: [SSL: TLSV1_ALERT_UNKNOWN_CA] unknown ca",
        ),
        (ProtocolError("bad"), ClientError, "gRPC protocol error talking to h:9: bad"),
    ],
)
def test_translate_error(exc: Exception, kind: type[ClientError], text: str) -> None:
    translated = translate_error(exc, "h:9")
    assert isinstance(translated, kind)
    assert str(translated) == text


def test_translate_error_hints_at_a_refused_certificate() -> None:
    text = str(translate_error(StreamTerminatedError("Connection lost"), "h:9", answered=False))
    assert text.startswith("connection to h:9 closed before any answer: Connection lost (")
    assert "certificate" in text


def test_server_error_text() -> None:
    assert str(NotFound("job 1234 not found")) == "not found: job 1234 not found"
    assert str(error_for_status(Status.PERMISSION_DENIED)) == "permission denied"


# --- rendering ---------------------------------------------------------------------------------

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


def test_details_of_a_running_job() -> None:
    text = render.job_details(make_job(), now=NOW)
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert lines["ID"].strip() == "j1"
    assert lines["Owner"].strip() == "alice"
    assert lines["State"].strip() == "running"
    assert lines["Result"].strip() == "-"
    assert lines["Command"].strip() == "sleep 5"
    assert lines["Directory"].strip() == "/srv"
    assert lines["Created"].strip().endswith("(5m ago)")
    assert lines["Started"].strip().endswith("(4m ago)")
    assert lines["Ended"].strip() == "-"
    assert lines["PID"].strip() == "4242"
    assert lines["Account"].strip() == "nobody:nogroup (65534:65534)"
    assert lines["Output"].strip() == "1.5 KiB (1536 bytes)"
    # values line up in one column
    assert len({line.index(line.split()[1]) for line in text.splitlines()}) == 1


def detail_lines(job: pb.Job) -> dict[str, str]:
    text = render.job_details(job, now=NOW)
    # values line up in one column
    assert len({line.index(line.split(":", 1)[1].strip()) for line in text.splitlines()}) == 1
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def test_details_show_only_what_is_set() -> None:
    text = render.job_details(make_job(), now=NOW)
    for label in ("Dropped", "Output error", "Limits", "Usage"):
        assert label not in text
    job = make_job(output_dropped_bytes=3976, output_error="output cap of 1 KiB reached")
    job.limits.memory_bytes = 256 * 2**20
    job.limits.pids = 100
    job.usage.cpu_seconds = 1.234
    job.usage.memory_peak_bytes = 12 * 2**20 + 2**19
    lines = detail_lines(job)
    assert lines["Dropped"] == "3.9 KiB (3976 bytes) of output not kept"
    assert lines["Output error"] == "output cap of 1 KiB reached"
    assert lines["Limits"] == "memory 256 MiB, pids 100"
    assert lines["Usage"] == "cpu 1.23 s, memory peak 12.5 MiB"


@pytest.mark.parametrize(
    ("limits", "text"),
    [
        (
            pb.Limits(
                cpu=0.5,
                memory_bytes=256 * 2**20,
                pids=64,
                io_read_bps=10 * 2**20,
                io_device="254:0",
            ),
            "cpu 0.5, memory 256 MiB, pids 64, io read 10 MiB/s on 254:0",
        ),
        (pb.Limits(cpu=2, memory_bytes=2**30 + 2**29), "cpu 2, memory 1.5 GiB"),
        (
            pb.Limits(io_read_bps=2**20, io_write_bps=512 * 2**10, io_device="8:0"),
            "io read 1 MiB/s, write 512 KiB/s on 8:0",
        ),
        (pb.Limits(io_write_bps=1000), "io write 1000 B/s"),
        (pb.Limits(io_device="\x1b[2J"), "io device on \\x1b[2J"),
        (pb.Limits(pids=4096), "pids 4096"),
        (pb.Limits(), "none"),  # the server reports limits, and there are none
    ],
)
def test_limits_line(limits: pb.Limits, text: str) -> None:
    job = make_job()
    job.limits.CopyFrom(limits)
    assert detail_lines(job)["Limits"] == text


@pytest.mark.parametrize(
    ("usage", "text"),
    [
        (
            pb.Usage(
                cpu_seconds=1.234,
                memory_peak_bytes=round(12.3 * 2**20),
                oom_kills=1,
                pids_limit_hits=3,
            ),
            "cpu 1.23 s, memory peak 12.3 MiB, OOM kills 1, task-limit hits 3",
        ),
        (pb.Usage(), "cpu 0.00 s"),
        (pb.Usage(cpu_seconds=0.004, pids_limit_hits=2), "cpu 0.00 s, task-limit hits 2"),
        (pb.Usage(memory_peak_bytes=0), "cpu 0.00 s, memory peak 0 B"),
    ],
)
def test_usage_line(usage: pb.Usage, text: str) -> None:
    job = make_job()
    job.usage.CopyFrom(usage)
    assert detail_lines(job)["Usage"] == text


def test_details_of_an_oom_killed_job() -> None:
    job = finished(
        outcome=pb.JobResult.OUTCOME_OOM_KILLED,
        signal=9,
        message="killed: out of memory (limit 100 MiB)",
    )
    job.limits.memory_bytes = 100 * 2**20
    job.usage.oom_kills = 1
    job.usage.memory_peak_bytes = 100 * 2**20
    lines = detail_lines(job)
    assert lines["Result"] == "killed: out of memory (limit 100 MiB)"
    assert lines["Limits"] == "memory 100 MiB"
    assert lines["Usage"] == "cpu 0.00 s, memory peak 100 MiB, OOM kills 1"
    assert render.status_line(job) == "j1: killed: out of memory (limit 100 MiB)"


def test_dropped_note() -> None:
    assert render.dropped_note(make_job()) == ""
    job = make_job(output_dropped_bytes=12345, output_error="output cap of 1 GiB reached; later")
    assert render.dropped_note(job) == (
        "output truncated: 12345 bytes dropped (output cap of 1 GiB reached; later)"
    )
    assert render.dropped_note(make_job(output_dropped_bytes=5)) == (
        "output truncated: 5 bytes dropped"
    )


def test_details_of_a_finished_job() -> None:
    job = finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=2, message="exited with code 2")
    text = render.job_details(job, now=NOW)
    assert "Result:    exited with code 2" in text
    assert "PID:       -" in text
    assert "(10s ago)" in text


@pytest.mark.parametrize(
    ("job", "line"),
    [
        (make_job(), "j1: running (pid 4242)"),
        (make_job(state=pb.JOB_STATE_STARTING, pid=0), "j1: starting"),
        (
            finished(
                outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0, message="exited with code 0"
            ),
            "j1: exited with code 0",
        ),
        # the server's message wins; without one, the structured fields are used
        (finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0), "j1: exited with code 0"),
        (finished(outcome=pb.JobResult.OUTCOME_SIGNALED, signal=9), "j1: killed by SIGKILL"),
        (
            finished(outcome=pb.JobResult.OUTCOME_STOPPED, stopped_by="bob", signal=15),
            "j1: stopped by bob",
        ),
        (finished(outcome=pb.JobResult.OUTCOME_FAILED_TO_START), "j1: failed to start"),
        (finished(outcome=pb.JobResult.OUTCOME_LOST), "j1: lost: the daemon died while it ran"),
        (
            finished(outcome=pb.JobResult.OUTCOME_OOM_KILLED),
            "j1: killed by the OOM killer: memory limit reached",
        ),
        (make_job(state=99), "j1: state 99 (pid 4242)"),
    ],
)
def test_status_line(job: pb.Job, line: str) -> None:
    assert render.status_line(job) == line


def test_terminal_escapes_from_the_server_are_neutralised() -> None:
    job = make_job(owner="eve\x1b[2J", argv=["echo", "\x1b]0;pwned\x07", "a\nb"])
    text = render.job_details(job, now=NOW) + render.job_table([job], now=NOW)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "eve\\x1b[2J" in text
    assert len(render.job_table([job], now=NOW).splitlines()) == 2


def test_job_json() -> None:
    job = finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0, message="exited with code 0")
    job.output_bytes = 2**40
    data = json.loads(render.to_json(render.job_to_dict(job)))
    assert data["id"] == "j1"
    assert data["output_bytes"] == 2**40  # a number, not proto3 JSON's quoted 64-bit string
    assert data["pid"] == 0
    assert data["state"] == "JOB_STATE_FINISHED"
    assert data["env"] == {"A": "1"}
    assert data["argv"] == ["sleep", "5"]
    assert data["result"] == {
        "outcome": "OUTCOME_EXITED",
        "exit_code": 0,
        "stopped_by": "",
        "message": "exited with code 0",
    }
    assert data["output_dropped_bytes"] == 0
    assert data["output_error"] == ""
    assert "limits" not in data and "usage" not in data
    job.limits.pids = 10
    job.usage.memory_peak_bytes = 2**33
    data = json.loads(render.to_json(render.job_to_dict(job)))
    assert data["limits"] == {"pids": 10, "io_device": ""}
    assert data["usage"] == {
        "cpu_seconds": 0.0,
        "memory_peak_bytes": 2**33,
        "oom_kills": 0,
        "pids_limit_hits": 0,
    }
    assert data["created_at"].endswith("Z")
    assert list(data)[:3] == ["id", "owner", "argv"]
    running = render.job_to_dict(make_job())
    assert "result" not in running
    assert "ended_at" not in running


def test_table() -> None:
    jobs = [
        make_job(id="b-later", argv=["sh", "-c", "echo " + "x" * 200]),
        finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0, message="exited with code 0"),
    ]
    jobs[0].created_at.FromSeconds(int(NOW) - 5)
    text = render.job_table(jobs, now=NOW, width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "OWNER", "STATE", "RESULT", "AGE", "COMMAND"]
    # in the order given: the server's, newest first
    assert lines[1].split()[:5] == ["b-later", "alice", "running", "-", "5s"]
    assert lines[2].split()[:2] == ["j1", "alice"]
    assert "exited with code 0" in lines[2]
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].endswith("...")
    assert lines[2][lines[0].index("COMMAND") :].startswith("sleep 5")
    assert len(render.job_table(jobs, now=NOW).splitlines()[1]) > 200  # no width: no cut


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3 * 2**20, "3.0 MiB"),
        (2**50, "1024.0 TiB"),
    ],
)
def test_size(n: int, text: str) -> None:
    assert render.size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0s"), (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (7200, "2h"), (90000, "1d")],
)
def test_age(seconds: float, text: str) -> None:
    assert render.age(seconds) == text


def test_iso_time_has_an_offset() -> None:
    text = render.iso_time(NOW)
    assert text[:4] == "2023"
    assert text[19] in "+-Z"


# --- start-up cost -----------------------------------------------------------------------------


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys, jobctl.cli\n"
        "code = jobctl.cli._main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    {'trio', 'trio_asyncio', 'grpclib', 'google', 'asyncio', 'h2', 'ssl'})\n"
        "print(code, heavy, file=sys.stderr)\n"
    )
    result = run_python(code)
    assert result.stderr.strip() == "0 []", result.stderr


def test_commands_never_import_trio() -> None:
    code = (
        "import sys, jobctl.cli\n"
        "code = jobctl.cli._main(['--server', '127.0.0.1:1', '--cacert', 'missing', 'list'])\n"
        "import jobctl.commands\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('trio')), file=sys.stderr)\n"
        "allowed = {'jobd.api', 'jobd.api.tls', 'jobd.api.grpclib_private',\n"
        "           'jobd.v1', 'jobd.v1.jobs_pb2', 'jobd.v1.jobs_grpc'}\n"
        "print([m for m in sys.modules if m.startswith('jobd.') and m not in allowed],\n"
        "      file=sys.stderr)\n"
    )
    result = run_python(code)
    assert result.stderr.splitlines()[-2:] == ["2 []", "[]"], result.stderr


def test_status_imports_only_what_it_needs(tmp_path: Path) -> None:
    # No config file: tomllib stays out; no --json: json stays out; no table: shutil stays out
    # (argparse's own formatter would import it, jobctl's does not).
    code = (
        "import os, sys, jobctl.cli\n"
        f"os.environ['XDG_CONFIG_HOME'] = {str(tmp_path)!r}\n"
        "code = jobctl.cli._main(['--server', '127.0.0.1:1', '--cacert', 'missing', 'status',\n"
        "                         'j1'])\n"
        "assert 'jobd.v1.jobs_pb2' in sys.modules  # it got as far as the client\n"
        "unwanted = {'tomllib', 'json', 'shutil', 'google.protobuf.json_format', 'trio'}\n"
        "print(code, sorted(unwanted & set(sys.modules)), file=sys.stderr)\n"
    )
    result = run_python(code)
    assert result.stderr.splitlines()[-1] == "2 []", result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "j1"],
        ["--server", "h:1", "status", "--json", "-w", "--interval", "0.5", "j1"],
        ["start", "--cpu", "50%", "--isolate", "pid,net", "--env", "A=1", "--", "sleep 2"],
        ["run", "--detach-on-interrupt", "--memory", "1G", "true"],
        ["stop", "--grace", "2", "--json", "j1"],
        ["list", "--all", "--owner", "bob"],
        ["top", "--once"],
        ["logs", "-f", "--stderr", "--tail", "3", "j1"],
        ["config", "contexts", "--json"],
        ["completion", "zsh"],
    ],
)
def test_lazy_parser_parses_like_the_full_one(argv: list[str]) -> None:
    full = vars(cli.build_parser({}).parse_args(argv))
    assert vars(cli.build_parser({}, lazy=True).parse_args(argv)) == full
    assert vars(cli.build_parser({}, lazy=True, argv=argv).parse_args(argv)) == full


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["status", "j1"], "status"),
        (["--server", "h:1", "--cert=c.pem", "logs", "-f", "j1"], "logs"),
        (["--serv", "h:1", "list"], "list"),  # argparse takes unambiguous abbreviations
        (["--server", "status", "list"], "list"),  # a value that looks like a command
        (["--context=status", "stop", "j1"], "stop"),
        (["--help"], None),
        (["-h", "status"], None),
        (["--no-such-option", "status"], None),
        (["--", "status"], None),
        (["stats", "j1"], None),
        ([], None),
    ],
)
def test_command_named_reads_only_what_is_plain(argv: list[str], named: str | None) -> None:
    assert cli.command_named(argv) == named


def test_command_named_knows_every_command_and_value_option() -> None:
    parser = cli.build_parser({})
    [commands] = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(cli.COMMANDS) == set(commands)
    takes_value = {o for a in parser._actions if a.nargs != 0 and a.option_strings
                   for o in a.option_strings}
    assert set(cli._GLOBAL_VALUE_OPTIONS) == takes_value


@pytest.mark.parametrize(
    "argv",
    [["--serv", "h:1", "status", "--no-such-option", "j1"], ["--c", "x", "status", "j1"],
     ["status"], ["logs", "--help"]],
)
def test_parser_of_one_command_reports_like_the_whole(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    outputs = []
    for only in (False, True):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser({}, lazy=True, argv=argv if only else None).parse_args(argv)
        outputs.append((exc.value.code, capsys.readouterr()))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        *(
            [command]
            for command in ("start", "run", "stop", "status", "list", "top", "config", "logs")
        ),
        ["completion"],
        ["config", "contexts"],
    ],
)
def test_lazy_parser_helps_like_the_full_one(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    outputs = []
    for lazy in (False, True):
        for tail in (["--help"], ["--no-such-option"]):
            with pytest.raises(SystemExit):
                cli.build_parser({}, lazy=lazy).parse_args([*argv, *tail])
            outputs.append(capsys.readouterr())
    assert outputs[:2] == outputs[2:]
    assert "usage: jobctl" in outputs[0].out


def test_lazy_parser_adds_only_the_arguments_of_the_command_used() -> None:
    parser = cli.build_parser({}, lazy=True)
    parser.parse_args(["status", "j1"])
    [commands] = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {a.dest for a in commands["status"]._actions} >= {"id", "watch", "json"}
    assert [a.dest for a in commands["logs"]._actions] == ["help"]


def test_console_script_exit_flushes_and_runs_atexit() -> None:
    # main() leaves through os._exit (no interpreter finalization): what it printed must
    # still arrive whole, and atexit handlers must still run.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        "sys.argv = ['jobctl', '--help']\n"
        "from jobctl.cli import main\n"
        "main()\n"
    )
    result = run_python(code)
    assert result.returncode == cli.EXIT_OK
    assert result.stderr == "atexit ran\n"
    assert result.stdout.startswith("usage: jobctl")
    assert result.stdout.endswith("keep the codes above.\n")


def test_console_script_exit_waits_for_a_running_thread() -> None:
    code = (
        "import threading, time\n"
        "from jobctl import cli\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "cli._exit(3)\n"
    )
    result = run_python(code)
    assert (result.returncode, result.stdout) == (3, "thread done\n")


def test_help_into_a_closed_pipe() -> None:
    read, write = os.pipe()
    os.close(read)  # closed before jobctl writes a byte
    # Buffered stdout, as usual: unbuffered, argparse's own write fails and argparse ignores it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "jobctl", "--help"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (cli.EXIT_BROKEN_PIPE, "")


# --- the CLI against a fake server -------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    server: Path
    client: Path
    other_ca: Path
    other_client: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(d / "ca.crt")
    other.cert_pem.write_to_path(d / "other_ca.crt")
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        d / "server.pem"
    )
    ca.issue_cert("alice", common_name="alice").private_key_and_cert_chain_pem.write_to_path(
        d / "client.pem"
    )
    other.issue_cert("eve", common_name="eve").private_key_and_cert_chain_pem.write_to_path(
        d / "other_client.pem"
    )
    return Certs(
        d / "ca.crt", d / "server.pem", d / "client.pem", d / "other_ca.crt", d / "other_client.pem"
    )


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
def serve(service: FakeJobService, certs: Certs) -> Iterator[int]:
    """Serve ``service`` over mTLS on 127.0.0.1 from a thread; yield the port."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        server = Server([service])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        state["port"] = sock.getsockname()[1]
        await server.start(sock=sock, ssl=server_context(certs.ca, certs.server))
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


@pytest.fixture
def service() -> FakeJobService:
    return FakeJobService()


@pytest.fixture
def jobctl(service: FakeJobService, certs: Certs) -> Iterator[Any]:
    """``jobctl(*argv)`` runs the CLI in-process against the fake server; returns the code."""
    with serve(service, certs) as port:
        environ = {
            "JOBCTL_SERVER": f"127.0.0.1:{port}",
            "JOBCTL_CACERT": str(certs.ca),
            "JOBCTL_CERT": str(certs.client),
        }

        def run(*argv: str, extra: dict[str, str] | None = None) -> int:
            return cli._main(list(argv), environ={**environ, **(extra or {})})

        yield run


def test_start_prints_only_the_id(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jobctl("start", "--env", "A=1", "--cwd", "/tmp", "sleep 2") == 0
    assert capsys.readouterr() == ("job-1\n", "")
    request = service.requests[-1]
    assert list(request.argv) == ["sleep", "2"]
    assert dict(request.env) == {"A": "1"}
    assert request.cwd == "/tmp"


def test_start_failure_prints_id_and_error(jobctl: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert jobctl("start", "--", "no-such-program", "x") == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == "job-1\n"
    assert err == "jobctl: job job-1: failed to start: no-such-program: No such file or directory\n"


def test_start_with_limits(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["start", "--cpu", "50%", "--memory", "64M", "--pids", "32", "--", "sleep", "30"]
    assert jobctl(*argv) == 0
    assert capsys.readouterr() == ("job-1\n", "")
    [request] = service.requests
    assert list(request.argv) == ["sleep", "30"]
    assert request.limits == pb.Limits(cpu=0.5, memory_bytes=64 * MiB, pids=32)
    assert jobctl("status", "job-1") == 0
    assert "Limits:    cpu 0.5, memory 64 MiB, pids 32\n" in capsys.readouterr().out


def test_start_with_a_bad_limit_never_connects(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jobctl("start", "--memory", "0", "--", "true") == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith(
        "\njobctl start: error: argument --memory: invalid size '0': must be more than 0\n"
    )
    assert service.requests == []


@pytest.mark.parametrize(
    ("status", "message", "line"),
    [
        (
            Status.INVALID_ARGUMENT,
            "memory limit 512 MiB is above the maximum for the user role (256 MiB)",
            "jobctl: invalid argument: memory limit 512 MiB is above the maximum for the user "
            "role (256 MiB)\n",
        ),
        (
            Status.FAILED_PRECONDITION,
            "cannot apply the memory limit: cgroup controller 'memory' is unavailable "
            "(disabled by configuration)",
            "jobctl: cannot apply the memory limit: cgroup controller 'memory' is unavailable "
            "(disabled by configuration)\n",
        ),
    ],
)
def test_start_refused_for_its_limits(
    jobctl: Any,
    service: FakeJobService,
    capsys: pytest.CaptureFixture[str],
    status: Status,
    message: str,
    line: str,
) -> None:
    service.error = GRPCError(status, message)
    assert jobctl("start", "--memory", "512M", "--", "true") == cli.EXIT_FAILED
    assert capsys.readouterr() == ("", line)


def test_status_list_and_stop(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str]
) -> None:
    service.add(make_job(id="j1"))
    service.add(make_job(id="j2", owner="bob"))
    assert jobctl("status", "j1") == 0
    assert "State:     running" in capsys.readouterr().out
    assert jobctl("status", "--json", "j1") == 0
    assert json.loads(capsys.readouterr().out)["output_bytes"] == 1536
    assert jobctl("list") == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["ID", "j2", "j1"]
    assert jobctl("list", "--json", "--owner", "bob") == 0
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == ["j2"]
    assert jobctl("stop", "--grace", "1.5", "j1") == 0
    assert capsys.readouterr().out == "j1: stopped by alice (SIGTERM)\n"
    assert service.requests[-1].grace.ToNanoseconds() == 1_500_000_000


@pytest.mark.parametrize(
    ("status", "code", "line"),
    [
        (None, cli.EXIT_FAILED, "jobctl: not found: job nope not found\n"),
        (Status.PERMISSION_DENIED, cli.EXIT_FAILED, "jobctl: permission denied: not yours\n"),
        (Status.INVALID_ARGUMENT, cli.EXIT_FAILED, "jobctl: invalid argument: not yours\n"),
        (Status.UNAVAILABLE, cli.EXIT_CONNECT, "jobctl: unavailable: not yours\n"),
    ],
)
def test_server_errors(
    jobctl: Any,
    service: FakeJobService,
    capsys: pytest.CaptureFixture[str],
    status: Status | None,
    code: int,
    line: str,
) -> None:
    if status is not None:
        service.error = GRPCError(status, "not yours")
    assert jobctl("stop", "nope") == code
    assert capsys.readouterr() == ("", line)


NASTY = bytes(range(256)) + b"\x00\xff\xfe not utf-8 \xc3\x28"


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


def stream_requests(service: FakeJobService) -> list[pb.StreamOutputRequest]:
    return [r for r in service.requests if isinstance(r, pb.StreamOutputRequest)]


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


def test_list_shows_the_newest_50_and_follows_pages(
    jobctl: Any, service: FakeJobService, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(120):
        service.add(make_job(id=f"j{i:03}", owner="bob" if i % 2 else "alice"))
    service.page_size = 7  # a server may answer fewer than asked: follow the token

    assert jobctl("list") == 0
    out, err = capsys.readouterr()
    ids = [line.split()[0] for line in out.splitlines()[1:]]
    assert ids == [f"j{i:03}" for i in range(119, 69, -1)]
    assert err == "jobctl: note: showing the newest 50 jobs; older ones exist (--all, --limit N)\n"
    limits = [r.limit for r in service.requests if isinstance(r, pb.ListJobsRequest)]
    assert limits[0] == 51 and sum(min(n, 7) for n in limits) == 51

    assert jobctl("list", "--json", "--limit", "3") == 0
    out, err = capsys.readouterr()
    assert [job["id"] for job in json.loads(out)] == ["j119", "j118", "j117"]
    assert err == ""

    assert jobctl("list", "--json", "--all") == 0
    jobs = json.loads(capsys.readouterr().out)
    assert isinstance(jobs, list)
    assert [job["id"] for job in jobs] == [f"j{i:03}" for i in range(119, -1, -1)]

    assert jobctl("list", "--all", "--owner", "alice") == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 61
    assert err == ""
    assert {r.owner for r in service.requests[-9:]} == {"alice"}

    assert jobctl("list", "--limit", "60", "--owner", "bob") == 0  # exactly all of bob's
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 61
    assert err == ""


def test_list_of_nothing(jobctl: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert jobctl("list", "--json") == 0
    assert capsys.readouterr() == ("[]\n", "")
    assert jobctl("list") == 0
    assert capsys.readouterr() == ("ID  OWNER  STATE  RESULT  AGE  COMMAND\n", "")


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


def test_untrusted_server_is_a_tls_error(
    jobctl: Any, certs: Certs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jobctl("list", extra={"JOBCTL_CACERT": str(certs.other_ca)}) == cli.EXIT_CONNECT
    err = capsys.readouterr().err
    assert err.startswith("jobctl: TLS handshake failed with 127.0.0.1:")
    assert "certificate verify failed" in err or "self-signed" in err or "issuer" in err


def test_client_certificate_from_another_ca_is_refused(
    jobctl: Any, certs: Certs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jobctl("list", extra={"JOBCTL_CERT": str(certs.other_client)}) == cli.EXIT_CONNECT
    err = capsys.readouterr().err
    assert err.startswith("jobctl: connection to 127.0.0.1:"), err
    assert "closed before any answer" in err
    assert err.count("\n") == 1


def test_missing_certificate_file(
    certs: Certs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli._main(["--cacert", str(certs.ca), "--cert", str(tmp_path / "nope.pem"), "list"])
    assert code == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        f"jobctl: cannot load certificate and key {tmp_path / 'nope.pem'}: "
        "No such file or directory\n"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_port_in_process(certs: Certs, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    argv = [
        "--server",
        f"127.0.0.1:{port}",
        "--cacert",
        str(certs.ca),
        "--cert",
        str(certs.client),
        "status",
        "j1",
    ]
    assert cli._main(argv) == cli.EXIT_CONNECT
    assert capsys.readouterr() == (
        "",
        f"jobctl: cannot connect to 127.0.0.1:{port}: Connection refused\n",
    )


def test_closed_port_console_script(certs: Certs) -> None:
    port = free_port()
    argv = [
        "--server",
        f"127.0.0.1:{port}",
        "--cacert",
        "ca.crt",
        "--cert",
        "client.pem",
        "logs",
        "-f",
        "j1",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "jobctl", *argv],
        capture_output=True,
        text=True,
        cwd=certs.ca.parent,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == cli.EXIT_CONNECT
    assert result.stdout == ""
    assert result.stderr == f"jobctl: cannot connect to 127.0.0.1:{port}: Connection refused\n"


@pytest.fixture
def endless_job(service: FakeJobService, certs: Certs) -> Iterator[subprocess.Popen[bytes]]:
    """A `jobctl logs -f` child process following a job that never ends."""
    service.add(make_job(id="forever"))
    service.endless.add("forever")
    with serve(service, certs) as port:
        argv = [
            "--server",
            f"127.0.0.1:{port}",
            "--cacert",
            str(certs.ca),
            "--cert",
            str(certs.client),
            "logs",
            "-f",
            "forever",
        ]
        child = subprocess.Popen(
            [sys.executable, "-m", "jobctl", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=sigint_default,
        )
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)


def test_ctrl_c_while_following(
    endless_job: subprocess.Popen[bytes], service: FakeJobService
) -> None:
    assert endless_job.stdout is not None
    assert endless_job.stdout.readline() == b"tick\n"
    endless_job.send_signal(signal.SIGINT)
    _, err = endless_job.communicate(timeout=20)
    assert endless_job.returncode == cli.EXIT_INTERRUPTED
    assert err == b""
    assert service.stream_ended.wait(10), "the stream was not cancelled on the server"
    assert not any(isinstance(r, pb.StopJobRequest) for r in service.requests)


def test_broken_stdout_pipe_is_quiet(endless_job: subprocess.Popen[bytes]) -> None:
    assert endless_job.stdout is not None
    assert endless_job.stdout.readline() == b"tick\n"
    endless_job.stdout.close()  # like `| head -1`
    assert endless_job.wait(20) == cli.EXIT_BROKEN_PIPE
    assert endless_job.stderr is not None
    assert endless_job.stderr.read() == b""


# --- limit values: the same grammar as jobd's config -------------------------------------------

limit_text = st.text(alphabet="0123456789.kKmMgGtTiIbB% /s-e", max_size=9)
size_text = st.builds(
    "{}{}{}{}{}".format,
    st.integers(min_value=0, max_value=10**6).map(str),
    st.sampled_from(["", ".", ".5", ".25", ".1", ".0625", ".3"]),
    st.sampled_from(["", " "]),
    st.sampled_from(["", "k", "K", "m", "M", "g", "G", "t", "T"]),
    st.sampled_from(["", "b", "B", "ib", "iB"]),
)


def outcome(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        return ValueError


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(limit_text, size_text))
def test_sizes_parse_as_jobd_parses_them(text: str) -> None:
    """jobctl copies jobd's size grammar; it refuses 0 and what a uint64 cannot hold."""
    from jobd.model import units as jobd_units
    theirs, mine = outcome(jobd_units.parse_size, text), outcome(units.parse_size, text)
    if theirs is ValueError or theirs == 0:
        assert mine is ValueError
    elif theirs < 2**50:  # beyond, jobd's float arithmetic rounds
        assert mine == theirs


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(limit_text, st.floats().map(str), st.floats().map(lambda f: f"{f}%")))
def test_cpu_parses_as_jobd_parses_it(text: str) -> None:
    from jobd.model import units as jobd_units
    assert outcome(units.parse_cpu, text) == outcome(jobd_units.parse_cpu, text)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (256 * MiB, "256 MiB"),
        (round(12.3 * MiB), "12.3 MiB"),
        (2**40, "1 TiB"),
        (2**50, "1024 TiB"),
    ],
)
def test_format_size_words_sizes_as_jobd_does(n: int, text: str) -> None:
    from jobd.model import units as jobd_units
    assert units.format_size(n) == text == jobd_units.format_size(n)


@pytest.mark.parametrize(
    ("on_entry", "caught"),
    [(signal.default_int_handler, True), (signal.SIG_DFL, True), (signal.SIG_IGN, False)],
)
def test_ctrl_c_is_taken_over_unless_it_came_ignored(on_entry: Any, caught: bool) -> None:
    from jobctl import commands

    before = signal.signal(signal.SIGINT, on_entry)
    try:
        assert commands._catch_ctrl_c() is caught
    finally:
        signal.signal(signal.SIGINT, before)
