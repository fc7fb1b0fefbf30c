"""End to end: a real jobd on 127.0.0.1, driven over mutual TLS with grpclib clients."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from grpclib import Status

from harness import (
    Certs,
    Daemon,
    collect,
    expect_status,
    processes_in_group,
    python,
    start,
    wait_for_output,
    wait_until,
)
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e

SHUTDOWN = "jobd (shutdown)"


def test_start_status_list_stream(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        out, err, final, _ = await collect(stub, job_id)
        assert (out, err) == (b"out\n", b"err\n")
        assert final.state == pb.JOB_STATE_FINISHED
        assert final.result.outcome == pb.JobResult.OUTCOME_EXITED
        assert final.result.exit_code == 3
        assert final.result.message == "exited with code 3"
        status = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        assert status.owner == "client_0"
        assert list(status.argv) == ["sh", "-c", "echo out; echo err >&2; exit 3"]
        assert status.output_bytes == 8
        assert status.created_at.ToNanoseconds() <= status.started_at.ToNanoseconds()
        assert status.started_at.ToNanoseconds() <= status.ended_at.ToNanoseconds()
        listed = await stub.ListJobs(pb.ListJobsRequest())
        assert [j.id for j in listed.jobs] == [job_id]

    daemon.run("client_0", scenario)


def test_env_and_cwd(daemon: Daemon, tmp_path: Any) -> None:
    os.environ["JOBD_TEST_LEAK"] = "1"  # the daemon's own environment must not reach jobs
    code = "import os; print(sorted(os.environ.items())); print(os.getcwd())"

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, python(code), env={"GREETING": "hi"}, cwd=str(tmp_path))
        out, _, final, _ = await collect(stub, job_id)
        env_line, cwd_line = out.decode().splitlines()
        env = dict(eval(env_line))
        assert env["GREETING"] == "hi"
        assert env["JOBD_JOB_ID"] == job_id
        assert "JOBD_TEST_LEAK" not in env
        assert cwd_line == str(tmp_path)
        assert final.result.exit_code == 0

    try:
        daemon.run("client_0", scenario)
    finally:
        del os.environ["JOBD_TEST_LEAK"]


def test_late_joiner_and_concurrent_followers_get_every_byte(daemon: Daemon) -> None:
    # Output arrives in pieces over time, so followers really follow a live job.
    code = (
        "import sys, time\n"
        "for i in range(40):\n"
        "    sys.stdout.buffer.write(bytes([i]) * 50000); sys.stdout.flush()\n"
        "    sys.stderr.write(f'line {i}\\n'); sys.stderr.flush()\n"
        "    time.sleep(0.005)\n"
    )
    expected_out = b"".join(bytes([i]) * 50000 for i in range(40))
    expected_err = "".join(f"line {i}\n" for i in range(40)).encode()

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, python(code))
        results = await asyncio.gather(*(collect(stub, job_id) for _ in range(3)))
        for out, err, final, _ in results:
            assert out == expected_out
            assert err == expected_err
            assert final.result.exit_code == 0
        late_out, late_err, _, _ = await collect(stub, job_id)
        assert (late_out, late_err) == (expected_out, expected_err)

    daemon.run("client_0", scenario)


def test_resume_from_offset(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["sh", "-c", "echo one; echo two >&2; echo three"])
        await collect(stub, job_id)
        chunks = []
        async with stub.StreamOutput.open() as stream:
            await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
            async for msg in stream:
                chunks.extend(msg.chunks)
        assert len(chunks) >= 2
        out, err, _, _ = await collect(stub, job_id, offset=chunks[0].next_offset)
        rest = [c for c in chunks[1:]]
        assert out == b"".join(c.data for c in rest if c.stream == pb.OUTPUT_STREAM_STDOUT)
        assert err == b"".join(c.data for c in rest if c.stream == pb.OUTPUT_STREAM_STDERR)

    daemon.run("client_0", scenario)


def test_binary_output_round_trips(daemon: Daemon) -> None:
    payload = bytes(range(256)) * 64 + b"\xff\xfe\x00invalid \xc3\x28 utf-8\x00"
    code = (
        "import sys\n"
        f"data = {payload!r}\n"
        "sys.stdout.buffer.write(data); sys.stdout.flush()\n"
        "sys.stderr.buffer.write(data[::-1]); sys.stderr.flush()\n"
    )

    async def scenario(stub: Any) -> None:
        out, err, _, _ = await collect(stub, await start(stub, python(code)))
        assert out == payload
        assert err == payload[::-1]

    daemon.run("client_0", scenario)


def test_stop_kills_a_job_that_ignores_sigterm(daemon: Daemon) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )

    async def scenario(stub: Any) -> None:
        job_id = await start(stub, python(code))
        await wait_for_output(stub, job_id, b"ready")
        status = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        pid = status.pid
        assert status.state == pb.JOB_STATE_RUNNING and pid > 0
        begin = time.monotonic()
        request = pb.StopJobRequest(job_id=job_id)
        request.grace.FromMilliseconds(500)
        final = await stub.StopJob(request)
        elapsed = time.monotonic() - begin
        assert 0.5 <= elapsed < 0.5 + 5  # grace, then SIGKILL: far less than the 300 s sleep
        assert final.state == pb.JOB_STATE_FINISHED
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED
        assert final.result.stopped_by == "client_0"
        assert final.result.signal == signal.SIGKILL
        assert processes_in_group(pid) == []
        again = await stub.StopJob(pb.StopJobRequest(job_id=job_id))
        assert again == final

    daemon.run("client_0", scenario)


def test_stop_kills_background_children_of_the_group(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["sh", "-c", "sleep 300 & sleep 300 & echo ready; wait"])
        await wait_for_output(stub, job_id, b"ready")
        pid = (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).pid
        assert len(processes_in_group(pid)) == 3
        final = await stub.StopJob(pb.StopJobRequest(job_id=job_id))
        assert final.result.signal == signal.SIGTERM
        assert wait_until(lambda: processes_in_group(pid) == [])

    daemon.run("client_0", scenario)


def test_users_see_only_their_own_jobs(daemon: Daemon) -> None:
    async def as_admin(stub: Any) -> str:
        return await start(stub, ["sleep", "300"])

    async def as_user(stub: Any) -> str:
        return await start(stub, ["true"])

    admin_job = daemon.run("client_0", as_admin)
    user_job = daemon.run("client_1", as_user)

    async def user_probes(stub: Any) -> None:
        for call in (
            stub.GetJob(pb.GetJobRequest(job_id=admin_job)),
            stub.StopJob(pb.StopJobRequest(job_id=admin_job)),
            collect(stub, admin_job),
        ):
            message = await expect_status(Status.NOT_FOUND, call)
            assert admin_job in message
        mine = await stub.ListJobs(pb.ListJobsRequest())
        assert [j.id for j in mine.jobs] == [user_job]
        others = stub.ListJobs(pb.ListJobsRequest(owner="client_0"))
        await expect_status(Status.PERMISSION_DENIED, others)

    daemon.run("client_1", user_probes)

    async def other_user(stub: Any) -> None:
        await expect_status(Status.NOT_FOUND, stub.GetJob(pb.GetJobRequest(job_id=user_job)))
        assert list((await stub.ListJobs(pb.ListJobsRequest())).jobs) == []

    daemon.run("client_2", other_user)

    async def admin_sees_all(stub: Any) -> None:
        every = await stub.ListJobs(pb.ListJobsRequest())
        assert {j.id for j in every.jobs} == {admin_job, user_job}
        by_owner = await stub.ListJobs(pb.ListJobsRequest(owner="client_1"))
        assert [j.id for j in by_owner.jobs] == [user_job]
        final = await stub.StopJob(pb.StopJobRequest(job_id=admin_job))
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED
        user_status = await stub.GetJob(pb.GetJobRequest(job_id=user_job))
        assert user_status.owner == "client_1"

    daemon.run("client_0", admin_sees_all)


def test_identity_without_role_is_denied_everything(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        calls = [
            stub.StartJob(pb.StartJobRequest(argv=["true"])),
            stub.GetJob(pb.GetJobRequest(job_id="x")),
            stub.StopJob(pb.StopJobRequest(job_id="x")),
            stub.ListJobs(pb.ListJobsRequest()),
            collect(stub, "x"),
        ]
        for call in calls:
            message = await expect_status(Status.PERMISSION_DENIED, call)
            assert "mallory" in message

    daemon.run("mallory", scenario)

    async def nothing_started(stub: Any) -> None:
        assert list((await stub.ListJobs(pb.ListJobsRequest())).jobs) == []

    daemon.run("client_0", nothing_started)


def test_bad_requests_get_clear_errors(daemon: Daemon, tmp_path: Any) -> None:
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("hello")
    not_executable.chmod(0o644)

    async def scenario(stub: Any) -> None:
        for request, needle in [
            (pb.StartJobRequest(), "argv is empty"),
            (pb.StartJobRequest(argv=["echo", "a\0b"]), "NUL"),
            (pb.StartJobRequest(argv=["true"], env={"A=B": "x"}), "A=B"),
            (pb.StartJobRequest(argv=["true"], cwd="relative"), "absolute"),
        ]:
            assert needle in await expect_status(Status.INVALID_ARGUMENT, stub.StartJob(request))
        assert list((await stub.ListJobs(pb.ListJobsRequest())).jobs) == []

        message = await expect_status(
            Status.FAILED_PRECONDITION,
            stub.StartJob(pb.StartJobRequest(argv=["no-such-command-xyz"])),
        )
        assert "no-such-command-xyz" in message
        message = await expect_status(
            Status.FAILED_PRECONDITION,
            stub.StartJob(pb.StartJobRequest(argv=[str(not_executable)])),
        )
        assert str(not_executable) in message and "permission denied" in message
        jobs = (await stub.ListJobs(pb.ListJobsRequest())).jobs
        assert len(jobs) == 2
        assert all(j.result.outcome == pb.JobResult.OUTCOME_FAILED_TO_START for j in jobs)
        await expect_status(Status.NOT_FOUND, stub.GetJob(pb.GetJobRequest(job_id="nope")))
        request = pb.StopJobRequest(job_id=jobs[0].id)
        request.grace.FromSeconds(-1)
        await expect_status(Status.INVALID_ARGUMENT, stub.StopJob(request))

    daemon.run("client_0", scenario)


def test_shutdown_stops_jobs_ends_streams_and_leaves_nothing(certs: Certs, tmp_path: Any) -> None:
    daemon = Daemon(certs, tmp_path / "state", "--grace", "1").start()
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    try:
        async def scenario(stub: Any) -> tuple[list[int], tuple[bytes, bytes, pb.Job, int]]:
            jobs = [
                await start(stub, ["sleep", "300"]),
                await start(stub, ["sh", "-c", "sleep 300 & echo ready; wait"]),
                await start(stub, python(stubborn)),
            ]
            for job_id in jobs[1:]:
                await wait_for_output(stub, job_id, b"ready")
            pids = [(await stub.GetJob(pb.GetJobRequest(job_id=j))).pid for j in jobs]
            follower = asyncio.ensure_future(collect(stub, jobs[2]))
            await asyncio.sleep(0)  # let the follower send its request before the signal
            daemon.signal(signal.SIGTERM)
            return pids, await follower

        pids, (out, _, final, _) = daemon.run("client_0", scenario)
        assert out == b"ready\n"
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED
        assert final.result.stopped_by == SHUTDOWN
        assert final.result.signal == signal.SIGKILL
        assert daemon.stop() == 0
        for pid in pids:
            assert wait_until(lambda pid=pid: processes_in_group(pid) == []), pid
    finally:
        daemon.kill()


def test_second_sigint_kills_at_once(certs: Certs, tmp_path: Any) -> None:
    daemon = Daemon(certs, tmp_path / "state", "--grace", "300").start()
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    try:
        async def scenario(stub: Any) -> int:
            job_id = await start(stub, python(stubborn))
            await wait_for_output(stub, job_id, b"ready")
            return int((await stub.GetJob(pb.GetJobRequest(job_id=job_id))).pid)

        pid = daemon.run("client_0", scenario)
        daemon.signal(signal.SIGINT)
        assert wait_until(lambda: any("shutting down" in line for line in daemon.log))
        begin = time.monotonic()
        daemon.signal(signal.SIGINT)
        assert daemon.stop(timeout=30) == 0
        assert time.monotonic() - begin < 30  # the 300 s grace period was skipped
        assert processes_in_group(pid) == []
    finally:
        daemon.kill()


def test_no_follow_stops_at_the_current_end(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["sh", "-c", "echo a; echo ready; exec sleep 300"])
        await wait_for_output(stub, job_id, b"ready")
        out = bytearray()
        final = None
        async with stub.StreamOutput.open() as stream:
            request = pb.StreamOutputRequest(job_id=job_id, no_follow=True)
            await stream.send_message(request, end=True)
            async for msg in stream:
                out += b"".join(c.data for c in msg.chunks)
                final = msg.final if msg.HasField("final") else final
        assert bytes(out) == b"a\nready\n"
        assert final is not None and final.state == pb.JOB_STATE_RUNNING
        await stub.StopJob(pb.StopJobRequest(job_id=job_id))

    daemon.run("client_0", scenario)


def test_an_offset_that_is_not_a_chunk_start_is_invalid(daemon: Daemon) -> None:
    async def scenario(stub: Any) -> None:
        job_id = await start(stub, ["echo", "hello world"])
        await collect(stub, job_id)
        message = await expect_status(Status.INVALID_ARGUMENT, collect(stub, job_id, offset=3))
        assert "not where a chunk starts" in message
        message = await expect_status(Status.INVALID_ARGUMENT, collect(stub, job_id, offset=10**9))
        assert "past the end" in message

    daemon.run("client_0", scenario)
