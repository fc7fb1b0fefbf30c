"""End to end: ``jobctl run`` against a real jobd: output, exit status, Ctrl-C.

Every test stops whatever job it leaves running (``cleanup``), so the ``daemon`` fixture's
clean shutdown check holds.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import PAYLOAD, Certs, Daemon, bin_path, binary_job, sigint_default, wait_until

pytestmark = pytest.mark.e2e

Result = subprocess.CompletedProcess[bytes]


def jobs(daemon: Daemon) -> list[dict[str, Any]]:
    result = daemon.jobctl("client_0", "list", "--all", "--json")
    assert result.returncode == 0, result
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


@pytest.fixture
def cleanup(daemon: Daemon) -> Iterator[Daemon]:
    """The daemon; every job still running at the end of the test is killed."""
    try:
        yield daemon
    finally:
        for job in jobs(daemon):
            if job["state"] != "JOB_STATE_FINISHED":
                daemon.jobctl("client_0", "stop", "--grace", "0", job["id"])


def only_job(daemon: Daemon) -> dict[str, Any]:
    [job] = jobs(daemon)
    return job


def test_exit_code_is_the_jobs(cleanup: Daemon) -> None:
    result = cleanup.jobctl("client_0", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, b"out\n", b"err\n"), result
    assert only_job(cleanup)["result"]["exit_code"] == 7


def test_exit_zero(cleanup: Daemon) -> None:
    result = cleanup.jobctl("client_0", "run", "true")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), result


def test_killed_by_a_signal_is_128_plus_n_and_said(cleanup: Daemon) -> None:
    result = cleanup.jobctl("client_0", "run", "--", "sh", "-c", "echo before; kill -9 $$")
    job = only_job(cleanup)
    said = f"jobctl: job {job['id']} killed by SIGKILL\n".encode()
    assert (result.returncode, result.stdout, result.stderr) == (137, b"before\n", said), result
    assert job["result"]["outcome"] == "OUTCOME_SIGNALED"


def test_an_oom_kill_is_said_not_just_137(cleanup: Daemon) -> None:
    hog = "import time; x = bytearray(256 << 20); time.sleep(1)"
    result = cleanup.jobctl("client_0", "run", "--memory", "32M", "--",
                            "python3", "-c", hog)  # fmt: skip
    if result.returncode == 1 and b"'memory' is unavailable" in result.stderr:
        pytest.skip(f"needs root and cgroups: {result.stderr.decode().strip()}")
    job = only_job(cleanup)
    assert job["result"]["outcome"] == "OUTCOME_OOM_KILLED", job
    assert result.returncode == 137, result
    said = f"jobctl: job {job['id']} killed: out of memory (limit 32 MiB)\n".encode()
    assert result.stderr.endswith(said), result


def test_start_options_apply(cleanup: Daemon) -> None:
    result = cleanup.jobctl(
        "client_0", "run", "--env", "GREETING=hi there", "--cwd", "/tmp", "--pids", "64",
        "--", "sh", "-c", 'echo "$GREETING in $(pwd)"',
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hi there in /tmp\n", b"")
    job = only_job(cleanup)
    assert (job["cwd"], job["env"]["GREETING"]) == ("/tmp", "hi there")


def test_output_is_byte_exact_like_logs(cleanup: Daemon) -> None:
    result = cleanup.jobctl("client_0", "run", "--", *binary_job(3))
    assert result.returncode == 3, result
    assert result.stdout == PAYLOAD
    assert result.stderr == PAYLOAD[::-1]
    logs = cleanup.jobctl("client_0", "logs", only_job(cleanup)["id"])
    assert (logs.stdout, logs.stderr) == (result.stdout, result.stderr)


def test_a_command_that_cannot_start(cleanup: Daemon) -> None:
    result = cleanup.jobctl("client_0", "run", "--", "no-such-command-xyz")
    assert (result.returncode, result.stdout) == (1, b""), result
    err = result.stderr.decode()
    assert err.startswith("jobctl: ") and err.count("\n") == 1, err
    assert "no-such-command-xyz" in err and "Traceback" not in err


def test_a_usage_error_starts_nothing(cleanup: Daemon) -> None:
    result = cleanup.jobctl("client_0", "run", "--memory", "lots", "--", "true")
    assert result.returncode == 2, result
    assert jobs(cleanup) == []


class Runner:
    """``jobctl run`` in the background, its stdout read as it comes."""

    def __init__(
        self, daemon: Daemon, *args: str, sigint: Callable[[], None] = sigint_default
    ) -> None:
        self.proc = subprocess.Popen(
            [bin_path("jobctl"), "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=daemon.jobctl_env(),
            preexec_fn=sigint,  # SIGINT at its default action, unless the test says otherwise
        )
        self.seen = b""

    def read_until(self, marker: bytes) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while marker not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.proc.stdout], [], [], left)[0], self.seen
            data = os.read(self.proc.stdout.fileno(), 4096)
            assert data, f"jobctl exited early: {self.proc.wait(10)}"
            self.seen += data

    def finish(self) -> tuple[int, bytes, bytes]:
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, self.seen + out, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def runners(cleanup: Daemon) -> Iterator[list[Runner]]:
    made: list[Runner] = []
    try:
        yield made
    finally:
        for runner in made:
            runner.close()


# The job answers SIGTERM with exit code 3 (the trap runs once the loop's sleep has ended).
POLITE = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
# The job ignores SIGTERM: only SIGKILL ends it.
STUBBORN = "trap '' TERM; echo ready; while :; do sleep 0.1; done"


def test_ctrl_c_stops_the_job_and_exits_with_its_status(
    cleanup: Daemon, runners: list[Runner]
) -> None:
    runner = Runner(cleanup, "--", "sh", "-c", POLITE)
    runners.append(runner)
    runner.read_until(b"ready\n")
    runner.proc.send_signal(signal.SIGINT)
    code, out, err = runner.finish()
    assert (code, out) == (3, b"ready\ngot TERM\n")
    job = only_job(cleanup)
    # stderr is the job's (sh may say its sleep was "Terminated"), then how the job ended.
    said = f"jobctl: job {job['id']} stopped by client_0 (exited with code 3)\n".encode()
    assert err == cleanup.jobctl("client_0", "logs", job["id"]).stderr + said
    assert job["result"]["outcome"] == "OUTCOME_STOPPED"
    assert job["result"]["stopped_by"] == "client_0"


@pytest.fixture
def patient(certs: Certs, tmp_path: Path) -> Iterator[Daemon]:
    """A jobd whose default grace period (an hour) no test waits out: a job that ignores
    SIGTERM ends in time only when a stop asks for grace 0."""
    daemon = Daemon(certs, tmp_path / "state", "--grace", "3600").start()
    try:
        yield daemon
        for job in jobs(daemon):
            if job["state"] != "JOB_STATE_FINISHED":
                daemon.jobctl("client_0", "stop", "--grace", "0", job["id"])
        assert daemon.stop() == 0, "\n".join(daemon.log)
    finally:
        daemon.kill()


def test_a_second_ctrl_c_kills_the_job(patient: Daemon) -> None:
    runner = Runner(patient, "--", "sh", "-c", STUBBORN)
    try:
        runner.read_until(b"ready\n")
        runner.proc.send_signal(signal.SIGINT)
        # The first Ctrl-C has been acted on once the job is stopping (SIGTERM sent, ignored).
        assert wait_until(lambda: only_job(patient)["state"] == "JOB_STATE_STOPPING", 30)
        runner.proc.send_signal(signal.SIGINT)
        code, out, err = runner.finish()
    finally:
        runner.close()
    assert (code, out) == (128 + signal.SIGKILL, b"ready\n")
    job = only_job(patient)
    assert (job["result"]["outcome"], job["result"]["signal"]) == ("OUTCOME_STOPPED", 9)
    said = f"jobctl: job {job['id']} stopped by client_0 (killed by SIGKILL)\n".encode()
    assert err == patient.jobctl("client_0", "logs", job["id"]).stderr + said


def test_detach_on_interrupt_leaves_the_job_running(cleanup: Daemon, runners: list[Runner]) -> None:
    runner = Runner(cleanup, "--detach-on-interrupt", "--", "sh", "-c", POLITE)
    runners.append(runner)
    runner.read_until(b"ready\n")
    runner.proc.send_signal(signal.SIGINT)
    code, out, err = runner.finish()
    job = only_job(cleanup)
    assert (code, out) == (130, b"ready\n")
    assert err.decode() == (
        f"jobctl: note: detached; job {job['id']} keeps running (jobctl logs -f {job['id']})\n"
    )
    assert job["state"] == "JOB_STATE_RUNNING"


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ctrl_c_ignored_on_entry_stays_ignored(cleanup: Daemon, runners: list[Runner]) -> None:
    # As a shell starts `jobctl run ... &` in a script: a Ctrl-C meant for the script's
    # foreground neither stops the job nor ends jobctl. Were it taken over, the stop would
    # reach the job within its two seconds of sleep and its trap would answer.
    script = "trap 'echo got TERM; exit 3' TERM; echo ready; sleep 2; echo done"
    runner = Runner(cleanup, "--", "sh", "-c", script, sigint=_sigint_ignored)
    runners.append(runner)
    runner.read_until(b"ready\n")
    runner.proc.send_signal(signal.SIGINT)
    code, out, err = runner.finish()
    assert (code, out, err) == (0, b"ready\ndone\n", b"")
    assert only_job(cleanup)["result"]["outcome"] == "OUTCOME_EXITED"
