"""End to end: ``jobctl top`` and ``jobctl status --watch`` against a real jobd."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from harness import Daemon, bin_path, sigint_default

pytestmark = pytest.mark.e2e


@pytest.fixture
def sleeper(daemon: Daemon) -> Iterator[str]:
    """A running job (stopped at the end)."""
    started = daemon.jobctl("client_0", "start", "--", "sleep", "300")
    assert started.returncode == 0, started
    job_id = started.stdout.decode().strip()
    try:
        yield job_id
    finally:
        stopped = daemon.jobctl("client_0", "stop", "--grace", "0", job_id)
        assert stopped.returncode == 0, stopped


def test_top_once_shows_running_jobs_only(daemon: Daemon, sleeper: str) -> None:
    done = daemon.jobctl("client_0", "start", "--", "true")
    assert done.returncode == 0, done
    ended = daemon.jobctl("client_0", "logs", "-f", done.stdout.decode().strip())
    assert ended.returncode == 0, ended  # logs -f returns once it has ended
    # stdout is a pipe here, so top prints one snapshot without --once too.
    for args in (["top"], ["top", "--once"]):
        result = daemon.jobctl("client_0", *args)
        assert (result.returncode, result.stderr) == (0, b""), result
        lines = result.stdout.decode().splitlines()
        assert "\x1b" not in result.stdout.decode()
        assert len(lines) == 2, lines
        assert lines[0].split() == ["ID", "OWNER", "CPU%", "MEM", "AGE", "COMMAND"]
        row = lines[1]
        assert len(row) <= 80
        assert re.fullmatch(
            rf"{sleeper[:8]}\s+client_0\s+(\d+\.\d|-)\s+(\S+ \S+|-)\s+\d+s\s+sleep 300", row
        ), row


def test_top_json(daemon: Daemon, sleeper: str) -> None:
    result = daemon.jobctl("client_0", "top", "--json")
    assert (result.returncode, result.stderr) == (0, b""), result
    [job] = json.loads(result.stdout)
    assert (job["id"], job["state"], job["argv"]) == (
        sleeper,
        "JOB_STATE_RUNNING",
        ["sleep", "300"],
    )
    assert job["cpu_percent"] is None or job["cpu_percent"] >= 0


def test_top_of_another_user_shows_only_theirs(daemon: Daemon, sleeper: str) -> None:
    result = daemon.jobctl("client_1", "top", "--once")
    assert (result.returncode, result.stderr) == (0, b""), result
    assert result.stdout.decode().splitlines() == ["ID  OWNER  CPU%  MEM  AGE  COMMAND"]


def test_status_watch_prints_a_line_per_change_until_the_end(daemon: Daemon) -> None:
    started = daemon.jobctl("client_0", "start", "--", "sleep", "300")
    assert started.returncode == 0, started
    job_id = started.stdout.decode().strip()
    env = daemon.jobctl_env()
    watcher = subprocess.Popen(
        [bin_path("jobctl"), "status", "--watch", "--interval", "0.1", job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert watcher.stdout is not None
        first = b""
        deadline = time.monotonic() + 60
        while not first.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([watcher.stdout], [], [], left)[0], first
            data = os.read(watcher.stdout.fileno(), 1)
            assert data, f"jobctl exited early: {watcher.wait(10)}"
            first += data
        assert re.fullmatch(rf"{job_id}: running \(pid \d+\)\n", first.decode()), first
    finally:
        stopped = daemon.jobctl("client_0", "stop", "--grace", "0", job_id)
        assert stopped.returncode == 0, stopped
    out, err = watcher.communicate(timeout=60)
    assert (watcher.returncode, err) == (0, b"")
    lines = out.decode().splitlines()
    assert lines, out
    assert lines[-1].startswith(f"{job_id}: stopped by client_0"), lines
    assert len(lines) == len(set(lines))  # only changes


def test_status_watch_of_a_finished_job_prints_once(daemon: Daemon) -> None:
    done = daemon.jobctl("client_0", "start", "--", "true")
    job_id = done.stdout.decode().strip()
    assert daemon.jobctl("client_0", "logs", "-f", job_id).returncode == 0  # it has ended
    result = daemon.jobctl("client_0", "status", "--watch", job_id)
    assert (result.returncode, result.stderr) == (0, b""), result
    assert result.stdout.decode() == f"{job_id}: exited with code 0\n"


def test_top_on_a_terminal_redraws_and_ctrl_c_exits_0(daemon: Daemon, sleeper: str) -> None:
    env = daemon.jobctl_env()
    controller, terminal = pty.openpty()
    try:
        top = subprocess.Popen(
            [bin_path("jobctl"), "top", "--interval", "0.1"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=sigint_default,
        )
        os.close(terminal)
        try:
            seen = b""
            deadline = time.monotonic() + 60
            while seen.count(b"\x1b[H\x1b[2J") < 2:  # two frames: it refreshes
                left = deadline - time.monotonic()
                assert left > 0 and select.select([controller], [], [], left)[0], seen
                seen += os.read(controller, 4096)
            frame = seen.split(b"\x1b[H\x1b[2J")[1].decode()
            assert "1 running job" in frame and sleeper[:8] in frame, frame
            top.send_signal(signal.SIGINT)
            assert top.wait(60) == 0
            assert top.stderr is not None and top.stderr.read() == b""
        finally:
            if top.poll() is None:
                top.kill()
            top.wait(10)
            assert top.stderr is not None
            top.stderr.close()
    finally:
        os.close(controller)
