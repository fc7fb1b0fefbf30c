"""History survives restarts and faults: SIGKILLed daemons, locked databases, damaged logs."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
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


def get(stub: Any, job_id: str) -> Any:
    return stub.GetJob(pb.GetJobRequest(job_id=job_id))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def restart(certs: Certs, state: Path, *extra: str) -> Daemon:
    return Daemon(certs, state, *extra).start()


def test_history_survives_a_graceful_restart(certs: Certs, state: Path) -> None:
    first = restart(certs, state)
    try:
        async def before(stub: Any) -> tuple[str, str]:
            done = await start(stub, ["sh", "-c", "echo out; echo err >&2; exit 4"])
            await collect(stub, done)
            running = await start(stub, ["sleep", "300"])
            return done, running

        done, running = first.run("client_0", before)
        assert first.stop() == 0
    finally:
        first.kill()

    second = restart(certs, state)
    try:
        async def after(stub: Any) -> None:
            finished = await get(stub, done)
            assert finished.result.exit_code == 4
            assert finished.owner == "client_0"
            out, err, final, _ = await collect(stub, done)
            assert (out, err) == (b"out\n", b"err\n")
            assert final.result.exit_code == 4
            stopped = await get(stub, running)
            assert stopped.state == pb.JOB_STATE_FINISHED
            assert stopped.result.outcome == pb.JobResult.OUTCOME_STOPPED
            assert stopped.result.stopped_by == "jobd (shutdown)"
            listed = await stub.ListJobs(pb.ListJobsRequest())
            assert [j.id for j in listed.jobs] == [running, done]  # newest first

        second.run("client_0", after)
    finally:
        assert second.stop() == 0


# Without cgroups only the recorded process key finds the job's group again.
@pytest.mark.parametrize("flags", [(), ("--no-cgroups",)], ids=["cgroups", "no-cgroups"])
def test_jobs_of_a_killed_daemon_are_reaped_and_marked_lost(
    certs: Certs, state: Path, flags: tuple[str, ...]
) -> None:
    first = restart(certs, state, *flags)
    try:
        async def before(stub: Any) -> tuple[str, int]:
            job_id = await start(stub, ["sh", "-c", "sleep 300 & echo ready; wait"])
            await wait_for_output(stub, job_id, b"ready")
            return job_id, (await get(stub, job_id)).pid

        job_id, pid = first.run("client_0", before)
        first.signal(signal.SIGKILL)
        assert first.stop() == -signal.SIGKILL
        assert len(processes_in_group(pid)) == 2  # the job outlived its daemon...
    finally:
        first.kill()

    second = restart(certs, state, *flags)
    try:
        assert wait_until(lambda: processes_in_group(pid) == [])  # ...until the next one
        assert any("marked lost" in line for line in second.log)
        # Its log is walked for its size once the daemon serves (on a worker thread).
        assert wait_until(lambda: any("measured the output of 1 job" in line
                                      for line in second.log))
        if flags:
            assert any("its process group was killed" in line for line in second.log)

        async def after(stub: Any) -> None:
            job = await get(stub, job_id)
            assert job.state == pb.JOB_STATE_FINISHED
            assert job.result.outcome == pb.JobResult.OUTCOME_LOST
            assert "jobd died" in job.result.message
            assert job.output_bytes == len(b"ready\n")  # what its log holds, not 0
            out, _, final, _ = await collect(stub, job_id)
            assert out == b"ready\n"
            assert final.result.outcome == pb.JobResult.OUTCOME_LOST

        second.run("client_0", after)
    finally:
        assert second.stop() == 0


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(
    certs: Certs, state: Path
) -> None:
    first = restart(certs, state)
    try:
        second = Daemon(certs, state)
        result = subprocess.run(second.argv, capture_output=True, timeout=60)
        assert result.returncode != 0
        assert b"in use by another jobd" in result.stderr
        assert str(first.proc.pid if first.proc else "?").encode() in result.stderr
        assert b"Traceback" not in result.stderr
    finally:
        assert first.stop() == 0


def test_a_locked_database_delays_history_but_not_jobs(certs: Certs, state: Path) -> None:
    daemon = restart(certs, state)
    locker = sqlite3.connect(state / "jobs.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock

        async def while_locked(stub: Any) -> str:
            job_id = await start(stub, ["echo", "still served"])
            out, _, _, _ = await collect(stub, job_id)
            assert out == b"still served\n"
            assert (await get(stub, job_id)).result.exit_code == 0
            listed = await stub.ListJobs(pb.ListJobsRequest())
            assert job_id in [j.id for j in listed.jobs]  # listed while only in memory
            return job_id

        job_id = daemon.run("client_0", while_locked)
        assert any("cannot be written" in line for line in daemon.log)
        locker.execute("ROLLBACK")
        assert wait_until(lambda: any("writable again" in line for line in daemon.log))
        assert daemon.stop() == 0
    finally:
        locker.close()
        daemon.kill()

    again = restart(certs, state)
    try:
        async def after(stub: Any) -> None:
            assert (await get(stub, job_id)).result.exit_code == 0

        again.run("client_0", after)
    finally:
        assert again.stop() == 0


def test_damaged_output_logs_give_data_loss_and_nothing_else_breaks(daemon: Daemon) -> None:
    async def make(stub: Any) -> list[str]:
        jobs = []
        for _ in range(2):
            job_id = await start(stub, python("print('x' * 1000); print('y' * 1000)"))
            await collect(stub, job_id)
            jobs.append(job_id)
        return jobs

    truncated, missing = daemon.run("client_0", make)
    log = daemon.state_dir / "output" / f"{truncated}.log"
    size = log.stat().st_size
    with open(log, "r+b") as f:
        f.truncate(size - 10)
    (daemon.state_dir / "output" / f"{missing}.log").unlink()

    async def after(stub: Any) -> None:
        message = await expect_status(Status.DATA_LOSS, collect(stub, truncated))
        assert "ends inside a frame" in message
        message = await expect_status(Status.DATA_LOSS, collect(stub, missing))
        assert "missing" in message
        assert (await get(stub, truncated)).result.exit_code == 0
        fine = await start(stub, ["echo", "ok"])
        assert (await collect(stub, fine))[0] == b"ok\n"

    daemon.run("client_0", after)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")
@pytest.mark.parametrize(
    ("min_free", "why"),
    [
        # No reserve: the disk fills up and writes fail.
        ("0", "No space left on device"),
        # The built-in 1 GiB reserve: a 2 MiB disk is short of it from the first byte.
        (None, "the state directory's disk has less than 1 GiB free; later output dropped"),
    ],
)
def test_a_full_disk_marks_the_output_and_the_job_goes_on(
    certs: Certs, tmp_path: Path, min_free: str | None, why: str,
) -> None:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], check=True)
    try:
        extra = f'[retention]\nmin_free = "{min_free}"\n' if min_free is not None else ""
        daemon = Daemon(certs, mountpoint / "state", config_extra=extra).start()
        try:
            code = "import sys\nfor _ in range(100): sys.stdout.write('z' * 65536)\nprint('done')"

            async def scenario(stub: Any) -> None:
                job_id = await start(stub, [sys.executable, "-c", code])
                _, _, final, _ = await collect(stub, job_id)
                assert final.result.exit_code == 0  # the job was never blocked or killed
                assert why in final.output_error
                assert final.output_dropped_bytes > 0
                assert final.output_bytes + final.output_dropped_bytes == 100 * 65536 + 5
                if min_free is None:
                    assert final.output_bytes == 0

            daemon.run("client_0", scenario)
            assert daemon.stop() == 0
        finally:
            daemon.kill()
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
