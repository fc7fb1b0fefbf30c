"""End to end: the audit log and the request bounds, against a real jobd."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import Any

import pytest
from grpclib import Status

from harness import Daemon, collect, expect_status, start
from jobd.model import bounds
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e

FIELDS = {"time", "identity", "peer", "action", "job_id", "outcome"}


def audit_lines(daemon: Daemon) -> list[dict[str, Any]]:
    text = (daemon.state_dir / "audit.log").read_text()
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


def test_each_call_leaves_one_line(daemon: Daemon) -> None:
    missing = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    job_ids: list[str] = []

    async def as_admin(stub: Any) -> None:
        job_ids.append(await start(stub, ["true"]))
        await collect(stub, job_ids[0])  # a StreamOutput call, ok
        await expect_status(Status.NOT_FOUND, stub.GetJob(pb.GetJobRequest(job_id=missing)))
        await expect_status(Status.INVALID_ARGUMENT, stub.StartJob(pb.StartJobRequest()))

    async def as_mallory(stub: Any) -> None:
        await expect_status(Status.PERMISSION_DENIED, stub.ListJobs(pb.ListJobsRequest()))

    daemon.run("client_0", as_admin)
    daemon.run("mallory", as_mallory)
    lines = audit_lines(daemon)
    assert [(e["identity"], e["action"], e["job_id"], e["outcome"]) for e in lines] == [
        ("client_0", "StartJob", job_ids[0], "ok"),
        ("client_0", "StreamOutput", job_ids[0], "ok"),
        ("client_0", "GetJob", missing, "NOT_FOUND"),
        ("client_0", "StartJob", "", "INVALID_ARGUMENT"),
        ("mallory", "ListJobs", "", "PERMISSION_DENIED"),
    ]
    for entry in lines:
        assert set(entry) - {"message"} == FIELDS
        assert entry["time"].endswith("Z") and entry["time"][:2] == "20"
        assert entry["peer"].startswith("127.0.0.1:")
        assert ("message" in entry) == (entry["outcome"] != "ok")
    assert lines[2]["message"] == f"job {missing} not found"
    assert "argv is empty" in lines[3]["message"]
    assert "mallory" in lines[4]["message"]
    mode = stat.S_IMODE((daemon.state_dir / "audit.log").stat().st_mode)
    assert mode == 0o600


def test_concurrent_calls_leave_whole_lines(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["true"])
        await asyncio.gather(*(stub.GetJob(pb.GetJobRequest(job_id=job_id)) for _ in range(50)))

    daemon.run("client_0", scenario)
    lines = audit_lines(daemon)  # every line parses
    assert len(lines) == 51
    assert sum(e["action"] == "GetJob" and e["outcome"] == "ok" for e in lines) == 50


def test_request_bounds(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        many = pb.StartJobRequest(argv=["true"] * (bounds.MAX_ARGV_ENTRIES + 1))
        message = await expect_status(Status.INVALID_ARGUMENT, stub.StartJob(many))
        assert "argv has 4097 entries; the most is 4096" in message
        long_cwd = pb.StartJobRequest(argv=["true"], cwd="/" + "d" * bounds.MAX_PATH_BYTES)
        assert "cwd is" in await expect_status(Status.INVALID_ARGUMENT, stub.StartJob(long_cwd))
        owner = pb.ListJobsRequest(owner="o" * (bounds.MAX_OWNER_BYTES + 1))
        assert "owner filter" in await expect_status(Status.INVALID_ARGUMENT, stub.ListJobs(owner))
        huge_id = "a" * 100_000
        huge = pb.GetJobRequest(job_id=huge_id)
        message = await expect_status(Status.NOT_FOUND, stub.GetJob(huge))
        assert len(message) < 200
        # Over the message size bound: refused from the header, the daemon stays up.
        big = pb.StartJobRequest(argv=["true", "x" * (bounds.MAX_MESSAGE_BYTES + 1)])
        message = await expect_status(Status.RESOURCE_EXHAUSTED, stub.StartJob(big))
        assert f"the most is {bounds.MAX_MESSAGE_BYTES}" in message
        job_id = await start(stub, ["true"])
        assert (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).id == job_id

    daemon.run("client_0", scenario)
    outcomes = [e["outcome"] for e in audit_lines(daemon)]
    assert outcomes[:5] == ["INVALID_ARGUMENT"] * 3 + ["NOT_FOUND", "RESOURCE_EXHAUSTED"]
