"""SIGHUP reloads the role table and limits; running jobs and streams carry on."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from grpclib import Status

from harness import ROLES, Daemon, collect, expect_status, start, wait_for_output, wait_until
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e


def write_config(daemon: Daemon, text: str) -> None:
    (daemon.state_dir.parent / f"{daemon.state_dir.name}.toml").write_text(text)


def identities(extra: dict[str, str]) -> str:
    table = {**ROLES, **extra}
    return "[identities]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items())


def reloads(daemon: Daemon, count: int, word: str) -> bool:
    return wait_until(lambda: sum(word in line for line in daemon.log) >= count)


def test_sighup_reloads_identities_without_touching_running_jobs(daemon: Daemon) -> None:
    async def before(stub: Any) -> str:
        job_id = await start(stub, ["sh", "-c", "echo ready; exec sleep 300"])
        await wait_for_output(stub, job_id, b"ready")
        return job_id

    running = daemon.run("client_0", before)

    async def denied(stub: Any) -> None:
        await expect_status(Status.PERMISSION_DENIED, stub.ListJobs(pb.ListJobsRequest()))

    daemon.run("mallory", denied)

    write_config(daemon, identities({"mallory": "user"}) + "[limits.max.user]\npids = 64\n")
    daemon.signal(signal.SIGHUP)
    assert reloads(daemon, 1, "reloaded identities and limits")

    async def allowed(stub: Any) -> None:
        job_id = await start(stub, ["echo", "hello"])
        assert (await collect(stub, job_id))[0] == b"hello\n"
        request = pb.StartJobRequest(argv=["true"], limits=pb.Limits(pids=100))
        message = await expect_status(Status.INVALID_ARGUMENT, stub.StartJob(request))
        assert "pids limit 100 tasks is above the maximum for the user role" in message

    daemon.run("mallory", allowed)

    # A file that does not load changes nothing.
    write_config(daemon, "[identities]\nmallory = \"superuser\"\n")
    daemon.signal(signal.SIGHUP)
    assert reloads(daemon, 1, "keeping the current configuration")

    async def still_allowed(stub: Any) -> None:
        await stub.ListJobs(pb.ListJobsRequest())

    daemon.run("mallory", still_allowed)

    async def after(stub: Any) -> None:
        job = await stub.GetJob(pb.GetJobRequest(job_id=running))
        assert job.state == pb.JOB_STATE_RUNNING  # the reloads left it alone
        await stub.StopJob(pb.StopJobRequest(job_id=running))

    daemon.run("client_0", after)


def test_a_role_taken_away_reaches_a_connection_opened_before(daemon: Daemon) -> None:
    write_config(daemon, identities({"mallory": "user"}))
    daemon.signal(signal.SIGHUP)
    assert reloads(daemon, 1, "reloaded identities and limits")

    async def scenario(stub: Any) -> None:
        await stub.ListJobs(pb.ListJobsRequest())  # one connection, open from here on
        write_config(daemon, identities({}))
        daemon.signal(signal.SIGHUP)
        assert reloads(daemon, 2, "reloaded identities and limits")
        message = await expect_status(Status.PERMISSION_DENIED,
                                      stub.StartJob(pb.StartJobRequest(argv=["true"])))
        assert "mallory" in message

    daemon.run("mallory", scenario)
