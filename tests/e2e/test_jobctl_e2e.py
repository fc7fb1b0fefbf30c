"""End to end: the jobctl console script against a real jobd over mutual TLS.

Every job a test leaves running is stopped by the test; the ``daemon`` fixture then checks
that jobd shuts down cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import (
    PAYLOAD,
    Certs,
    Daemon,
    bin_path,
    binary_job,
    python,
    sigint_default,
    wait_for_output,
)
from jobctl import cli

pytestmark = pytest.mark.e2e

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
Result = subprocess.CompletedProcess[bytes]


def ok(result: Result) -> bytes:
    """stdout of a run that must have succeeded quietly."""
    assert (result.returncode, result.stderr) == (0, b""), result
    return result.stdout


def one_line_error(result: Result, code: int, prefix: str) -> str:
    """The error line of a failed run: one line on stderr, nothing on stdout, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == code, result
    assert result.stdout == b"", result
    assert err.startswith(prefix), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def status(daemon: Daemon, job_id: str, who: str = "client_0") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(daemon.jobctl(who, "status", "--json", job_id)))
    return data


def start(daemon: Daemon, *argv: str, who: str = "client_0", options: Sequence[str] = ()) -> str:
    out = ok(daemon.jobctl(who, "start", *options, "--", *argv)).decode()
    assert UUID.fullmatch(out.rstrip("\n")), out
    return out.rstrip("\n")


@contextlib.contextmanager
def running(daemon: Daemon, *argv: str, options: Sequence[str] = ()) -> Iterator[str]:
    """A job that is stopped (if it still runs) when the block ends."""
    job_id = start(daemon, *argv, options=options)
    try:
        yield job_id
    finally:
        result = daemon.jobctl("client_0", "stop", "--grace", "0", job_id)
        assert result.returncode == 0, result


def wait_printed(daemon: Daemon, job_id: str, *markers: bytes) -> None:
    """Return once the job has printed each marker (followed from its output, no sleeping)."""
    for marker in markers:
        daemon.run("client_0", lambda stub, m=marker: wait_for_output(stub, job_id, m))


# --- start, status, list, stop -----------------------------------------------------------------


def test_start_prints_only_the_id(daemon: Daemon) -> None:
    result = daemon.jobctl("client_0", "start", "--", "sleep", "300")
    try:
        assert (result.returncode, result.stderr) == (0, b""), result
        assert UUID.fullmatch(result.stdout.decode().removesuffix("\n")), result.stdout
        job_id = result.stdout.decode().strip()
        job = status(daemon, job_id)
        assert (job["state"], job["argv"]) == ("JOB_STATE_RUNNING", ["sleep", "300"])
    finally:
        if result.returncode == 0:
            ok(daemon.jobctl("client_0", "stop", "--grace", "0", result.stdout.decode().strip()))


def test_start_in_a_shell_script(daemon: Daemon) -> None:
    script = (
        'id=$("$JOBCTL" start -- sleep 300) || exit 10\n'
        'echo "started $id"\n'
        '"$JOBCTL" status "$id" >/dev/null || exit 11\n'
        'exec "$JOBCTL" stop --grace 0 "$id"\n'
    )
    env = {**daemon.jobctl_env("client_1"), "JOBCTL": bin_path("jobctl")}
    result = subprocess.run(["sh", "-c", script], capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result
    assert result.stderr == b""
    started, stopped = result.stdout.decode().splitlines()
    job_id = started.removeprefix("started ")
    assert UUID.fullmatch(job_id), started
    assert stopped.startswith(f"{job_id}: stopped by client_1"), stopped
    job = status(daemon, job_id)
    assert (job["owner"], job["argv"], job["state"]) == (
        "client_1",
        ["sleep", "300"],
        "JOB_STATE_FINISHED",
    )


def test_the_seed_form_with_explicit_flags(daemon: Daemon) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCTL_")}
    flags = [
        "--server", daemon.server,
        "--cacert", str(daemon.certs.ca),
        "--cert", str(daemon.certs.client("client_0")),
    ]  # fmt: skip
    result = subprocess.run(
        [bin_path("jobctl"), *flags, "start", "sleep 2"], capture_output=True, env=env, timeout=60
    )
    job_id = ok(result).decode().strip()
    assert UUID.fullmatch(job_id), result
    assert status(daemon, job_id)["argv"] == ["sleep", "2"]
    # Follow it to its natural end, with the same explicit flags.
    result = subprocess.run(
        [bin_path("jobctl"), *flags, "logs", "-f", job_id], capture_output=True, env=env, timeout=60
    )
    assert ok(result) == b""
    job = status(daemon, job_id)
    assert job["state"] == "JOB_STATE_FINISHED"
    assert job["result"]["outcome"] == "OUTCOME_EXITED"
    assert job["result"]["exit_code"] == 0


def test_status_list_and_stop(daemon: Daemon) -> None:
    with running(daemon, "sleep", "300") as job_id:
        text = ok(daemon.jobctl("client_0", "status", job_id)).decode()
        fields = {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}
        assert fields["ID"] == job_id
        assert fields["Owner"] == "client_0"
        assert fields["State"] == "running"
        assert fields["Command"] == "sleep 300"
        assert fields["Result"] == "-"
        assert int(fields["PID"]) > 0

        job = status(daemon, job_id)
        assert (job["id"], job["state"], job["argv"]) == (
            job_id,
            "JOB_STATE_RUNNING",
            ["sleep", "300"],
        )
        assert job["pid"] == int(fields["PID"])
        assert "result" not in job
        # jobd reports the limits a job runs with (with cgroups, at least the default task
        # limit) and its usage so far.
        if "pids" in job["limits"]:
            assert f"pids {job['limits']['pids']}" in fields["Limits"]
        assert re.fullmatch(r"cpu \d+\.\d\d s(, .*)?", fields["Usage"]), fields["Usage"]
        assert "Dropped" not in fields and "Output error" not in fields

        table = ok(daemon.jobctl("client_0", "list")).decode().splitlines()
        assert table[0].split() == ["ID", "OWNER", "STATE", "RESULT", "AGE", "COMMAND"]
        assert [row.split()[:4] for row in table[1:]] == [[job_id, "client_0", "running", "-"]]
        assert table[1].endswith("sleep 300")
        listed = json.loads(ok(daemon.jobctl("client_0", "list", "--json")))
        assert [j["id"] for j in listed] == [job_id]

        line = ok(daemon.jobctl("client_0", "stop", job_id)).decode()
        assert line.startswith(f"{job_id}: stopped by client_0"), line
        assert line.count("\n") == 1
        job = status(daemon, job_id)
        assert job["state"] == "JOB_STATE_FINISHED"
        assert job["result"]["outcome"] == "OUTCOME_STOPPED"
        assert job["result"]["stopped_by"] == "client_0"
        assert job["result"]["signal"] == signal.SIGTERM
        table = ok(daemon.jobctl("client_0", "list")).decode().splitlines()
        assert table[1].split()[:3] == [job_id, "client_0", "finished"]


def test_list_newest_first_with_limit_and_all(daemon: Daemon) -> None:
    jobs = [start(daemon, "true") for _ in range(3)]
    user_job = start(daemon, "true", who="client_1")
    newest_first = [user_job, *reversed(jobs)]

    listed = json.loads(ok(daemon.jobctl("client_0", "list", "--json")))
    assert isinstance(listed, list)
    assert [j["id"] for j in listed] == newest_first
    listed = json.loads(ok(daemon.jobctl("client_0", "list", "--json", "--limit", "2")))
    assert [j["id"] for j in listed] == newest_first[:2]
    listed = json.loads(ok(daemon.jobctl("client_0", "list", "--json", "--all")))
    assert [j["id"] for j in listed] == newest_first
    owned = json.loads(ok(daemon.jobctl("client_0", "list", "--json", "--owner", "client_0")))
    assert [j["id"] for j in owned] == newest_first[1:]
    mine = json.loads(ok(daemon.jobctl("client_1", "list", "--json", "--all")))
    assert [j["id"] for j in mine] == [user_job]

    result = daemon.jobctl("client_0", "list", "--limit", "1")
    assert result.returncode == 0
    rows = result.stdout.decode().splitlines()
    assert [row.split()[0] for row in rows] == ["ID", user_job]
    assert result.stderr.decode() == (
        "jobctl: note: showing the newest 1 jobs; older ones exist (--all, --limit N)\n"
    )


# --- limits ------------------------------------------------------------------------------------

MiB = 2**20
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root and cgroups: not root")


def detail_fields(text: bytes) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.decode().splitlines())}


@pytest.mark.cgroups
@needs_root
def test_start_with_limits_shows_them_in_status(daemon: Daemon) -> None:
    options = ["--memory", "64M", "--pids", "32", "--cpu", "0.5"]
    with running(daemon, "sleep", "30", options=options) as job_id:
        fields = detail_fields(ok(daemon.jobctl("client_0", "status", job_id)))
        assert fields["State"] == "running"
        assert fields["Limits"] == "cpu 0.5, memory 64 MiB, pids 32"
        limits = status(daemon, job_id)["limits"]
        assert limits == {"cpu": 0.5, "memory_bytes": 64 * MiB, "pids": 32, "io_device": ""}


def test_a_bad_limit_is_a_usage_error_before_any_connection(daemon: Daemon) -> None:
    result = daemon.jobctl("client_0", "start", "--memory", "0", "--", "true")
    assert (result.returncode, result.stdout) == (cli.EXIT_USAGE, b""), result
    err = result.stderr.decode()
    assert err.endswith(
        "\njobctl start: error: argument --memory: invalid size '0': must be more than 0\n"
    ), err
    assert "Traceback" not in err
    # Not even a connection: the same with no server at all gives the same answer.
    unreachable = daemon.jobctl(
        "client_0", "--server", "127.0.0.1:1", "start", "--memory", "0", "--", "true"
    )
    assert (unreachable.returncode, unreachable.stderr) == (cli.EXIT_USAGE, result.stderr)
    assert json.loads(ok(daemon.jobctl("client_0", "list", "--json"))) == []


def test_a_limit_above_the_role_maximum_is_refused(certs: Certs, tmp_path: Path) -> None:
    daemon = Daemon(
        certs, tmp_path / "state", config_extra='\n[limits.max.user]\nmemory = "256M"\n'
    )
    daemon.start()
    try:
        refused = daemon.jobctl("client_1", "start", "--memory", "512M", "--", "true")
        one_line_error(
            refused,
            cli.EXIT_FAILED,
            "jobctl: invalid argument: memory limit 512 MiB is above the maximum for the user "
            "role (256 MiB)\n",
        )
        assert json.loads(ok(daemon.jobctl("client_1", "list", "--json"))) == []
        daemon.check_exit(daemon.stop())
    finally:
        daemon.kill()


def test_a_limit_the_server_cannot_enforce_is_refused(certs: Certs, tmp_path: Path) -> None:
    daemon = Daemon(certs, tmp_path / "state", "--no-cgroups").start()
    try:
        refused = daemon.jobctl("client_0", "start", "--pids", "10", "--", "true")
        err = one_line_error(
            refused,
            cli.EXIT_FAILED,
            "jobctl: cannot apply the pids limit: cgroup controller 'pids' is unavailable (",
        )
        assert "disabled" in err
        assert json.loads(ok(daemon.jobctl("client_0", "list", "--json"))) == []
        daemon.check_exit(daemon.stop())
    finally:
        daemon.kill()


OOM_CODE = """
chunks = []
for i in range(50):
    chunks.append(b"x" * (10 << 20))  # written, so every page is really used
    print(f"allocated {(i + 1) * 10} MiB", flush=True)
print("survived", flush=True)
"""


@pytest.mark.cgroups
@needs_root
def test_an_oom_killed_job(daemon: Daemon) -> None:
    job_id = start(daemon, *python(OOM_CODE), options=["--memory", "100M"])
    followed = daemon.jobctl("client_0", "logs", "-f", job_id)  # returns when it has ended
    assert followed.returncode == 0, followed
    assert b"survived" not in followed.stdout
    fields = detail_fields(ok(daemon.jobctl("client_0", "status", job_id)))
    assert fields["State"] == "finished"
    assert fields["Result"] == "killed: out of memory (limit 100 MiB)"
    assert fields["Limits"].startswith("memory 100 MiB"), fields["Limits"]
    usage = fields["Usage"]
    assert re.fullmatch(r"cpu \d+\.\d\d s, memory peak [\d.]+ MiB, OOM kills \d+", usage), usage
    line = ok(daemon.jobctl("client_0", "list")).decode().splitlines()[1]
    assert "killed: out of memory (limit 100 MiB)" in line


# --- logs --------------------------------------------------------------------------------------

def test_logs_are_byte_exact_and_kept_apart(daemon: Daemon) -> None:
    job_id = start(daemon, *binary_job())
    followed = daemon.jobctl("client_0", "logs", "-f", job_id)
    assert followed.returncode == 0
    assert followed.stdout == PAYLOAD
    assert followed.stderr == PAYLOAD[::-1]

    assert status(daemon, job_id)["state"] == "JOB_STATE_FINISHED"
    everything = daemon.jobctl("client_0", "logs", job_id)
    assert (everything.returncode, everything.stdout, everything.stderr) == (
        0,
        PAYLOAD,
        PAYLOAD[::-1],
    )
    assert ok(daemon.jobctl("client_0", "logs", "--stdout", job_id)) == PAYLOAD
    only_err = daemon.jobctl("client_0", "logs", "-f", "--stderr", job_id)
    assert (only_err.returncode, only_err.stdout, only_err.stderr) == (0, b"", PAYLOAD[::-1])


def test_the_same_with_protobufs_pure_python_backend(daemon: Daemon) -> None:
    # jobctl defers protobuf's pure-Python message module (jobctl.lazyproto); with that backend
    # chosen, nothing is deferred and every command must still behave the same.
    job_id = start(daemon, *binary_job(exit_code=3))
    ok(daemon.jobctl("client_0", "logs", "-f", "--stdout", job_id))
    pure = {**daemon.jobctl_env(), "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    for args in (["status", "--json", job_id], ["list", "--json"], ["logs", job_id]):
        default = daemon.jobctl("client_0", *args)
        other = subprocess.run([bin_path("jobctl"), *args], capture_output=True, env=pure,
                               timeout=60)  # fmt: skip
        assert (other.returncode, other.stdout, other.stderr) == (
            default.returncode,
            default.stdout,
            default.stderr,
        ), args
    assert status(daemon, job_id)["result"]["exit_code"] == 3
    started = subprocess.run([bin_path("jobctl"), "start", "--", "true"], capture_output=True,
                             env=pure, timeout=60)  # fmt: skip
    assert UUID.fullmatch(ok(started).decode().rstrip("\n")), started


def test_logs_stdout_into_a_file(daemon: Daemon, tmp_path: Path) -> None:
    job_id = start(daemon, *binary_job())
    ok(daemon.jobctl("client_0", "logs", "-f", "--stdout", job_id))  # waits for the end
    target = tmp_path / "out.bin"
    env = daemon.jobctl_env()
    command = f'"$JOBCTL" logs --stdout {job_id} > "$TARGET"'
    result = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        env={**env, "JOBCTL": bin_path("jobctl"), "TARGET": str(target)},
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert target.read_bytes() == PAYLOAD


def test_logs_tail(daemon: Daemon) -> None:
    job_id = start(daemon, "sh", "-c", "printf 'one\\ntwo\\nthree\\nfour\\n'; echo err >&2")
    ok(daemon.jobctl("client_0", "logs", "-f", "--stdout", job_id))  # waits for the end
    assert ok(daemon.jobctl("client_0", "logs", "--stdout", "--tail", "2", job_id)) == (
        b"three\nfour\n"
    )
    tail = daemon.jobctl("client_0", "logs", "--tail", "2", "--stderr", job_id)
    assert (tail.returncode, tail.stdout, tail.stderr) == (0, b"", b"err\n")
    assert ok(daemon.jobctl("client_0", "logs", "-f", "--stdout", "--tail", "9", job_id)) == (
        b"one\ntwo\nthree\nfour\n"
    )


def test_logs_tail_two_lines(daemon: Daemon) -> None:
    job_id = start(daemon, "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done")
    ok(daemon.jobctl("client_0", "logs", "-f", job_id))  # waits for the end
    assert ok(daemon.jobctl("client_0", "logs", "--tail", "2", job_id)) == b"line 4\nline 5\n"
    assert ok(daemon.jobctl("client_0", "logs", job_id)) == b"".join(
        b"line %d\n" % i for i in range(1, 6)
    )


def test_logs_of_a_running_job_stop_at_what_existed(daemon: Daemon) -> None:
    code = (
        "import sys, time\n"
        "sys.stdout.write('a\\nb\\n'); sys.stdout.flush()\n"
        "sys.stderr.write('x\\nready\\n'); sys.stderr.flush()\n"
        "time.sleep(300)\n"
    )
    with running(daemon, *python(code)) as job_id:
        wait_printed(daemon, job_id, b"a\nb\n", b"ready\n")
        both = daemon.jobctl("client_0", "logs", job_id)
        assert (both.returncode, both.stdout, both.stderr) == (0, b"a\nb\n", b"x\nready\n")
        assert ok(daemon.jobctl("client_0", "logs", "--stdout", job_id)) == b"a\nb\n"
        assert ok(daemon.jobctl("client_0", "logs", "--stdout", "--tail", "1", job_id)) == b"b\n"
        err = daemon.jobctl("client_0", "logs", "--stderr", "--tail", "1", job_id)
        assert (err.returncode, err.stdout, err.stderr) == (0, b"", b"ready\n")
        assert status(daemon, job_id)["state"] == "JOB_STATE_RUNNING"


def test_logs_of_a_running_job_return_while_it_runs(daemon: Daemon) -> None:
    with running(daemon, "sh", "-c", "echo a; echo ready; exec sleep 300") as job_id:
        wait_printed(daemon, job_id, b"ready\n")
        # A follower would wait for the job (300 s): the harness's timeout is lower.
        result = daemon.jobctl("client_0", "logs", job_id, timeout=30)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"a\nready\n", b"")
        assert status(daemon, job_id)["state"] == "JOB_STATE_RUNNING"


def test_logs_of_a_running_job_by_stream(daemon: Daemon) -> None:
    script = "echo out; echo err >&2; echo ready; exec sleep 300"
    with running(daemon, "sh", "-c", script) as job_id:
        # Each stream has its own pipe: wait for both, not only for the last line.
        wait_printed(daemon, job_id, b"err\n", b"ready\n")
        err = daemon.jobctl("client_0", "logs", "--stderr", job_id, timeout=30)
        assert (err.returncode, err.stdout, err.stderr) == (0, b"", b"err\n")
        out = daemon.jobctl("client_0", "logs", "--stdout", job_id, timeout=30)
        assert (out.returncode, out.stdout, out.stderr) == (0, b"out\nready\n", b"")
        tail = daemon.jobctl("client_0", "logs", "--stdout", "--tail", "1", job_id, timeout=30)
        assert (tail.returncode, tail.stdout, tail.stderr) == (0, b"ready\n", b"")
        assert status(daemon, job_id)["state"] == "JOB_STATE_RUNNING"


def test_logs_of_a_job_still_writing_stop_at_what_existed(daemon: Daemon) -> None:
    with running(daemon, "sh", "-c", "while :; do echo tick; done") as job_id:
        wait_printed(daemon, job_id, b"tick\n")
        result = daemon.jobctl("client_0", "logs", "--stdout", job_id, timeout=60)
        assert (result.returncode, result.stderr) == (0, b"")
        lines = result.stdout.split(b"\n")
        assert len(lines) > 1 and set(lines[:-1]) == {b"tick"} and b"tick".startswith(lines[-1])
        assert status(daemon, job_id)["state"] == "JOB_STATE_RUNNING"


def test_logs_resume_from_an_offset(daemon: Daemon) -> None:
    job_id = start(daemon, "sh", "-c", "echo one; echo two >&2; echo three")

    async def chunks_of(stub: Any) -> list[Any]:
        from jobd.v1 import jobs_pb2 as pb

        seen = []
        async with stub.StreamOutput.open() as stream:
            await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
            async for message in stream:
                seen += message.chunks
        return seen

    chunks = daemon.run("client_0", chunks_of)
    assert len(chunks) >= 2  # stdout and stderr never share a chunk
    rest = chunks[1:]
    expected_out = b"".join(c.data for c in rest if c.stream == 1)
    expected_err = b"".join(c.data for c in rest if c.stream == 2)
    after_first = str(chunks[0].next_offset)
    resumed = daemon.jobctl("client_0", "logs", "--offset", after_first, job_id)
    assert (resumed.returncode, resumed.stdout, resumed.stderr) == (0, expected_out, expected_err)
    followed = daemon.jobctl("client_0", "logs", "-f", "--offset", after_first, job_id)
    assert (followed.returncode, followed.stdout, followed.stderr) == (
        0,
        expected_out,
        expected_err,
    )
    inside = daemon.jobctl("client_0", "logs", "--offset", str(chunks[0].next_offset - 1), job_id)
    one_line_error(inside, cli.EXIT_FAILED, "jobctl: ")


def test_logs_follow_returns_when_the_job_ends(daemon: Daemon) -> None:
    job_id = start(daemon, "sh", "-c", "echo a; sleep 1; echo b")
    begin = time.monotonic()
    result = daemon.jobctl("client_0", "logs", "-f", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"a\nb\n", b"")
    assert time.monotonic() - begin < 30
    job = status(daemon, job_id)
    assert job["state"] == "JOB_STATE_FINISHED"
    assert job["result"]["exit_code"] == 0


def test_ctrl_c_while_following_leaves_the_job_running(daemon: Daemon) -> None:
    with running(daemon, "sh", "-c", "echo ready; exec sleep 300") as job_id:
        follower = subprocess.Popen(
            [bin_path("jobctl"), "logs", "-f", job_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=daemon.jobctl_env(),
            preexec_fn=sigint_default,
        )
        try:
            assert follower.stdout is not None
            seen = b""
            deadline = time.monotonic() + 60
            while b"ready\n" not in seen:
                left = deadline - time.monotonic()
                assert left > 0 and select.select([follower.stdout], [], [], left)[0], seen
                data = os.read(follower.stdout.fileno(), 4096)
                assert data, f"jobctl exited early: {follower.wait(10)}"
                seen += data
            follower.send_signal(signal.SIGINT)
            _, err = follower.communicate(timeout=60)
            assert follower.returncode == cli.EXIT_INTERRUPTED
            assert err == b""
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait(10)
        job = status(daemon, job_id)
        assert job["state"] == "JOB_STATE_RUNNING"
        stopped = ok(daemon.jobctl("client_0", "stop", "--grace", "0", job_id)).decode()
        assert stopped.startswith(f"{job_id}: stopped by client_0")
        assert status(daemon, job_id)["state"] == "JOB_STATE_FINISHED"


# --- errors ------------------------------------------------------------------------------------


def test_other_users_and_strangers(daemon: Daemon) -> None:
    with running(daemon, "sleep", "300") as job_id:
        for args in (["status", job_id], ["logs", "-f", job_id], ["stop", job_id]):
            err = one_line_error(daemon.jobctl("client_1", *args), 1, "jobctl: not found: ")
            assert job_id in err
        err = one_line_error(daemon.jobctl("client_1", "list", "--owner", "client_0"), 1, "")
        assert err.startswith("jobctl: permission denied: ")
        for args in (["status", job_id], ["list"], ["start", "--", "true"], ["logs", job_id]):
            err = one_line_error(daemon.jobctl("mallory", *args), 1, "jobctl: permission denied: ")
            assert "mallory" in err
        assert status(daemon, job_id)["state"] == "JOB_STATE_RUNNING"
    assert json.loads(ok(daemon.jobctl("client_2", "list", "--json"))) == []


def test_connection_errors(daemon: Daemon) -> None:
    refused = daemon.jobctl("client_0", "--server", "127.0.0.1:1", "list")
    one_line_error(refused, cli.EXIT_CONNECT, "jobctl: cannot connect to 127.0.0.1:1: ")
    foreign = str(daemon.certs.dir / "foreign.pem")
    err = one_line_error(daemon.jobctl("client_0", "--cert", foreign, "list"), 3, "jobctl: ")
    assert daemon.server in err
    assert any(word in err for word in ("TLS", "connection", "connect")), err
    err = one_line_error(
        daemon.jobctl("client_0", "--cert", foreign, "logs", "-f", "x"), cli.EXIT_CONNECT, ""
    )
    assert err.startswith("jobctl: ")


def test_start_of_a_missing_command(daemon: Daemon) -> None:
    result = daemon.jobctl("client_0", "start", "--", "no-such-command-xyz", "arg")
    err = one_line_error(result, cli.EXIT_FAILED, "jobctl: ")
    assert "no-such-command-xyz" in err
    [job] = json.loads(ok(daemon.jobctl("client_0", "list", "--json")))
    assert job["result"]["outcome"] == "OUTCOME_FAILED_TO_START"


# --- output cap --------------------------------------------------------------------------------


def test_output_cap(certs: Certs, tmp_path: Path) -> None:
    daemon = Daemon(certs, tmp_path / "state", "--max-output", "1K").start()
    try:
        data = bytes(range(256)) * 19 + bytes(range(136))  # 5000 bytes
        assert len(data) == 5000
        code = f"import sys; sys.stdout.buffer.write({data!r})"
        job_id = start(daemon, *python(code))
        followed = daemon.jobctl("client_0", "logs", "-f", job_id)
        assert followed.returncode == 0
        assert followed.stdout == data[:1024]
        note = followed.stderr.decode()
        assert note.startswith("jobctl: note: output truncated: 3976 bytes dropped ("), note
        assert "output cap" in note and note.endswith(")\n") and note.count("\n") == 1

        logs = daemon.jobctl("client_0", "logs", job_id)
        assert (logs.returncode, logs.stdout, logs.stderr.decode()) == (0, data[:1024], note)
        job = status(daemon, job_id)
        assert job["output_dropped_bytes"] == 3976
        assert job["output_bytes"] == 1024
        assert "output cap" in job["output_error"]
        text = ok(daemon.jobctl("client_0", "status", job_id)).decode()
        assert "Dropped:" in text and "(3976 bytes)" in text
        assert "Output error:" in text
        daemon.check_exit(daemon.stop())
    finally:
        daemon.kill()
