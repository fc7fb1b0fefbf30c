"""The whole CLI against the fake server: start, status, list, stop, TLS and connection
errors, Ctrl-C while following, a broken stdout pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeCerts, FakeJobService, MiB, free_port, make_job, serve
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from harness import sigint_default
from jobctl import cli
from jobd.v1 import jobs_pb2 as pb

REPO = Path(__file__).resolve().parents[3]




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


def test_untrusted_server_is_a_tls_error(
    jobctl: Any, fake_certs: FakeCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jobctl("list", extra={"JOBCTL_CACERT": str(fake_certs.other_ca)}) == cli.EXIT_CONNECT
    err = capsys.readouterr().err
    assert err.startswith("jobctl: TLS handshake failed with 127.0.0.1:")
    assert "certificate verify failed" in err or "self-signed" in err or "issuer" in err


def test_client_certificate_from_another_ca_is_refused(
    jobctl: Any, fake_certs: FakeCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jobctl("list", extra={"JOBCTL_CERT": str(fake_certs.other_client)}) == cli.EXIT_CONNECT
    err = capsys.readouterr().err
    assert err.startswith("jobctl: connection to 127.0.0.1:"), err
    assert "closed before any answer" in err
    assert err.count("\n") == 1


def test_missing_certificate_file(
    fake_certs: FakeCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli._main(["--cacert", str(fake_certs.ca), "--cert", str(tmp_path / "nope.pem"), "list"])
    assert code == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        f"jobctl: cannot load certificate and key {tmp_path / 'nope.pem'}: "
        "No such file or directory\n"
    )


def test_closed_port_in_process(fake_certs: FakeCerts, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    argv = [
        "--server",
        f"127.0.0.1:{port}",
        "--cacert",
        str(fake_certs.ca),
        "--cert",
        str(fake_certs.client),
        "status",
        "j1",
    ]
    assert cli._main(argv) == cli.EXIT_CONNECT
    assert capsys.readouterr() == (
        "",
        f"jobctl: cannot connect to 127.0.0.1:{port}: Connection refused\n",
    )


def test_closed_port_console_script(fake_certs: FakeCerts) -> None:
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
        cwd=fake_certs.ca.parent,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == cli.EXIT_CONNECT
    assert result.stdout == ""
    assert result.stderr == f"jobctl: cannot connect to 127.0.0.1:{port}: Connection refused\n"


@pytest.fixture
def endless_job(
    service: FakeJobService, fake_certs: FakeCerts
) -> Iterator[subprocess.Popen[bytes]]:
    """A `jobctl logs -f` child process following a job that never ends."""
    service.add(make_job(id="forever"))
    service.endless.add("forever")
    with serve(service, fake_certs) as port:
        argv = [
            "--server",
            f"127.0.0.1:{port}",
            "--cacert",
            str(fake_certs.ca),
            "--cert",
            str(fake_certs.client),
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


