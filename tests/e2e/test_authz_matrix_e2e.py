"""Authorization matrix against one real daemon: every RPC x caller x target, from one table.

Callers: the admin ``client_0``, the owner of the target job ``client_1`` (a user), another user
``client_2``, and ``mallory`` (a valid certificate, but no role). Targets: ``client_1``'s job,
``client_0``'s job and a job id that names no job. A user asking about another's job gets the
same NOT_FOUND as for a missing job; an identity without a role gets PERMISSION_DENIED for
everything. For ListJobs the "target" is the owner filter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from grpclib import Status

from harness import Certs, Daemon, expect_status, start, stop, wait_for_output
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e

ADMIN, OWNER, OTHER, UNKNOWN = "client_0", "client_1", "client_2", "mallory"
CALLERS = [ADMIN, OWNER, OTHER, UNKNOWN]
OK, NOT_FOUND, DENIED = Status.OK, Status.NOT_FOUND, Status.PERMISSION_DENIED

# Targets of the job RPCs (whose job it is; None: no such job) and the ListJobs filters.
OWNERS_JOB, ADMINS_JOB, MISSING = "client_1's job", "client_0's job", "missing job"
TARGET_OWNER = {OWNERS_JOB: OWNER, ADMINS_JOB: ADMIN, MISSING: None}
NO_FILTER, OWN_FILTER, OTHERS_FILTER = "no filter", "own filter", "other's filter"

# The one table: (rpc, target) -> expected status for each caller in CALLERS order.
#                                            admin      owner      other      unknown
MATRIX: dict[tuple[str, str], tuple[Status, Status, Status, Status]] = {
    ("StartJob", "new job"):                (OK,        OK,        OK,        DENIED),
    ("ListJobs", NO_FILTER):                (OK,        OK,        OK,        DENIED),
    ("ListJobs", OWN_FILTER):               (OK,        OK,        OK,        DENIED),
    ("ListJobs", OTHERS_FILTER):            (OK,        DENIED,    DENIED,    DENIED),
    ("GetJob", OWNERS_JOB):                 (OK,        OK,        NOT_FOUND, DENIED),
    ("GetJob", ADMINS_JOB):                 (OK,        NOT_FOUND, NOT_FOUND, DENIED),
    ("GetJob", MISSING):                    (NOT_FOUND, NOT_FOUND, NOT_FOUND, DENIED),
    ("StreamOutput", OWNERS_JOB):           (OK,        OK,        NOT_FOUND, DENIED),
    ("StreamOutput", ADMINS_JOB):           (OK,        NOT_FOUND, NOT_FOUND, DENIED),
    ("StreamOutput", MISSING):              (NOT_FOUND, NOT_FOUND, NOT_FOUND, DENIED),
    ("StopJob", OWNERS_JOB):                (OK,        OK,        NOT_FOUND, DENIED),
    ("StopJob", ADMINS_JOB):                (OK,        NOT_FOUND, NOT_FOUND, DENIED),
    ("StopJob", MISSING):                   (NOT_FOUND, NOT_FOUND, NOT_FOUND, DENIED),
}  # fmt: skip

CASES = [
    pytest.param(rpc, target, caller, expected, id=f"{rpc}-{target}-{caller}")
    for (rpc, target), statuses in MATRIX.items()
    for caller, expected in zip(CALLERS, statuses, strict=True)
]

# A job that announces it is running, then runs until it is stopped.
LONG = ["sh", "-c", "echo ready; exec sleep 300"]
MISSING_ID = str(uuid.uuid4())  # looks like a job id, names none


@dataclass
class World:
    daemon: Daemon
    jobs: dict[str, str]  # owner -> id of that owner's long-running shared target job

    def target_id(self, target: str) -> str:
        owner = TARGET_OWNER[target]
        return MISSING_ID if owner is None else self.jobs[owner]


async def start_running(stub: Any) -> str:
    job_id = await start(stub, LONG)
    await wait_for_output(stub, job_id, b"ready")
    return job_id


def running(daemon: Daemon, job_id: str) -> bool:
    async def get(stub: Any) -> Any:
        return await stub.GetJob(pb.GetJobRequest(job_id=job_id))

    return daemon.run(ADMIN, get).state == pb.JOB_STATE_RUNNING


def stop_everything(daemon: Daemon) -> list[pb.Job]:
    """Stop every job still running (as the admin); the jobs as listed afterwards."""

    async def scenario(stub: Any) -> list[pb.Job]:
        listed = await stub.ListJobs(pb.ListJobsRequest())
        for job in listed.jobs:
            if job.state != pb.JOB_STATE_FINISHED:
                await stop(stub, job.id)
        return list((await stub.ListJobs(pb.ListJobsRequest())).jobs)

    return daemon.run(ADMIN, scenario)


@pytest.fixture(scope="module")
def world(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    daemon = Daemon(certs, tmp_path_factory.mktemp("authz") / "state").start()
    try:
        jobs = {owner: daemon.run(owner, start_running) for owner in (OWNER, ADMIN)}
        yield World(daemon, jobs)
        # Only StopJob cases stop jobs, and those use jobs of their own.
        assert all(running(daemon, job_id) for job_id in jobs.values())
        after = stop_everything(daemon)
        assert after and all(job.state == pb.JOB_STATE_FINISHED for job in after)
    finally:
        code = daemon.stop()
    daemon.check_exit(code)


async def outcome(expected: Status, call: Any, job_id: str, caller: str) -> Any:
    """The reply if ``expected`` is OK; otherwise check the status and its message."""
    if expected is OK:
        return await call
    message = await expect_status(expected, call)
    if expected is NOT_FOUND:
        # Exactly what a missing job gives: nothing about who owns the job.
        assert message == f"job {job_id} not found"
    elif caller == UNKNOWN:
        assert message == f"identity {caller!r} has no role on this server"
    else:  # a user asking for another owner's listing
        assert message == f"{caller} may list only its own jobs"
    return None


def visible(caller: str, owner: str, owner_filter: str) -> bool:
    """Whether ``caller``'s listing with ``owner_filter`` ("" for none) shows ``owner``'s job."""
    return (not owner_filter or owner == owner_filter) and (caller == ADMIN or owner == caller)


@pytest.mark.parametrize(("rpc", "target", "caller", "expected"), CASES)
def test_authorization_matrix(
    world: World, rpc: str, target: str, caller: str, expected: Status
) -> None:
    daemon = world.daemon
    if rpc == "StartJob":
        marker = f"started by {caller}"

        async def start_as_caller(stub: Any) -> Any:
            return await outcome(
                expected, stub.StartJob(pb.StartJobRequest(argv=["echo", marker])), "", caller
            )

        reply = daemon.run(caller, start_as_caller)

        async def list_all(stub: Any) -> Any:
            return await stub.ListJobs(pb.ListJobsRequest())

        started = [j for j in daemon.run(ADMIN, list_all).jobs if list(j.argv) == ["echo", marker]]
        if expected is OK:
            assert [j.id for j in started] == [reply.job_id]
            assert started[0].owner == caller
        else:
            assert started == []
        return

    if rpc == "ListJobs":
        owner_filter = {
            NO_FILTER: "",
            OWN_FILTER: caller,
            OTHERS_FILTER: OTHER if caller == OWNER else OWNER,
        }[target]

        async def list_as_caller(stub: Any) -> Any:
            request = pb.ListJobsRequest(owner=owner_filter)
            return await outcome(expected, stub.ListJobs(request), "", caller)

        reply = daemon.run(caller, list_as_caller)
        if expected is OK:
            listed = {job.id: job.owner for job in reply.jobs}
            assert all(visible(caller, owner, owner_filter) for owner in listed.values()), listed
            for owner, job_id in world.jobs.items():
                assert (job_id in listed) == visible(caller, owner, owner_filter), (owner, listed)
        return

    if rpc == "StopJob":
        check_stop(world, target, caller, expected)
        return

    job_id = world.target_id(target)

    async def call_as_caller(stub: Any) -> Any:
        if rpc == "GetJob":
            call = stub.GetJob(pb.GetJobRequest(job_id=job_id))
        else:
            call = wait_for_output(stub, job_id, b"ready")
        return await outcome(expected, call, job_id, caller)

    reply = daemon.run(caller, call_as_caller)
    if rpc == "GetJob" and expected is OK:
        assert reply.id == job_id
        assert reply.owner == TARGET_OWNER[target]
        assert reply.state == pb.JOB_STATE_RUNNING


def check_stop(world: World, target: str, caller: str, expected: Status) -> None:
    """StopJob on a fresh job of the target's owner, so every case has a running job to stop."""
    daemon = world.daemon
    owner = TARGET_OWNER[target]
    job_id = MISSING_ID if owner is None else daemon.run(owner, start_running)
    try:

        async def stop_as_caller(stub: Any) -> Any:
            return await outcome(expected, stop(stub, job_id), job_id, caller)

        reply = daemon.run(caller, stop_as_caller)
        if owner is None:
            return
        if expected is OK:
            assert reply.id == job_id
            assert reply.state == pb.JOB_STATE_FINISHED
            assert reply.result.outcome == pb.JobResult.OUTCOME_STOPPED
        else:
            assert running(daemon, job_id), "a refused StopJob still stopped the job"
    finally:
        if owner is not None:

            async def stop_as_owner(stub: Any) -> Any:
                return await stop(stub, job_id)

            assert daemon.run(owner, stop_as_owner).state == pb.JOB_STATE_FINISHED


def test_the_table_covers_every_rpc_caller_and_target() -> None:
    rpcs = {rpc for rpc, _ in MATRIX}
    assert rpcs == set(pb.DESCRIPTOR.services_by_name["JobService"].methods_by_name)
    for rpc in ("GetJob", "StreamOutput", "StopJob"):
        assert {t for r, t in MATRIX if r == rpc} == set(TARGET_OWNER)
    assert {t for r, t in MATRIX if r == "ListJobs"} == {NO_FILTER, OWN_FILTER, OTHERS_FILTER}
    assert len(CASES) == 4 * len(MATRIX)
