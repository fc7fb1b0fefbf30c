"""End to end: ``--json`` on the commands that print data but did not have it (start, stop)."""

from __future__ import annotations

import json

import pytest

from harness import Daemon

pytestmark = pytest.mark.e2e


def test_start_and_stop_json(daemon: Daemon) -> None:
    started = daemon.jobctl("client_0", "start", "--json", "--env", "A=1", "--", "sleep", "300")
    assert (started.returncode, started.stderr) == (0, b""), started
    job = json.loads(started.stdout)
    try:
        assert (job["argv"], job["owner"], job["env"]) == (["sleep", "300"], "client_0", {"A": "1"})
        assert job["state"] in ("JOB_STATE_STARTING", "JOB_STATE_RUNNING")
    finally:
        stopped = daemon.jobctl("client_0", "stop", "--json", "--grace", "0", job["id"])
    assert (stopped.returncode, stopped.stderr) == (0, b""), stopped
    final = json.loads(stopped.stdout)
    assert (final["id"], final["state"]) == (job["id"], "JOB_STATE_FINISHED")
    assert (final["result"]["outcome"], final["result"]["stopped_by"]) == (
        "OUTCOME_STOPPED",
        "client_0",
    )


def test_start_json_of_a_job_that_cannot_start(daemon: Daemon) -> None:
    result = daemon.jobctl("client_0", "start", "--json", "--", "no-such-command-xyz")
    # The server refuses the request: an error, no half-written JSON on stdout.
    assert (result.returncode, result.stdout) == (1, b""), result
    err = result.stderr.decode()
    assert err.startswith("jobctl: ") and err.count("\n") == 1 and "no-such-command-xyz" in err
