"""The job manager with real processes: start, validate, stop, list, output, shutdown."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers_unit import (
    PROCESS_TIMEOUT,
    by_stream,
    open_manager,
    python,
    wait_for_output,
    wait_process_exit,
)

from jobd.jobs import manager as manager_module
from jobd.jobs import output, supervisor
from jobd.jobs.manager import LOST, MAX_PAGE, JobManager, validate_grace, validate_spec
from jobd.jobs.output import Chunk, OutputLog, Stream
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import Store
from jobd.launch import procid
from jobd.launch.spawn import Child
from jobd.model.errors import InvalidArgument, SpawnFailed, Unavailable
from jobd.model.job import SHUTDOWN, Job, JobSpec, Outcome, Result, State

WAIT = "import time; print('ready', flush=True); time.sleep(120)"
IGNORE_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def spec(argv: list[str], **kwargs: Any) -> JobSpec:
    return JobSpec(tuple(argv), **kwargs)


def unfinished(manager: JobManager) -> list[Job]:
    # (running() may still list a job for a moment after it ended, until its runner is dropped)
    return [j for j in manager.running() if not j.finished]


async def collect(manager: JobManager, job: Job, **kwargs: Any) -> list[Chunk]:
    chunks: list[Chunk] = []
    async with contextlib.aclosing(manager.output(job, **kwargs)) as batches:
        async for batch in batches:
            chunks.extend(batch)
    return chunks


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (spec([]), "argv is empty"),
        (spec([""]), "argv[0] is empty"),
        (spec(["echo", "a\0b"]), "argv[1] contains a NUL byte"),
        (spec(["ec\0ho"]), "argv[0] contains a NUL byte"),
        (spec(["true"], env={"": "x"}), "environment variable name '' is not valid"),
        (spec(["true"], env={"A=B": "x"}), "environment variable name 'A=B' is not valid"),
        (spec(["true"], env={"A\0": "x"}), "environment variable name 'A\\x00' is not valid"),
        (spec(["true"], env={"A": "x\0y"}), "environment variable A contains a NUL byte"),
        (spec(["true"], cwd="/tmp\0x"), "cwd contains a NUL byte"),
        (spec(["true"], cwd="tmp"), "cwd 'tmp' must be an absolute path"),
        (spec(["true"], cwd=""), "cwd '' must be an absolute path"),
        (spec(["true"], cwd="./x"), "cwd './x' must be an absolute path"),
    ],
)
def test_validate_spec_rejects(bad: JobSpec, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_spec(bad)
    assert message in str(info.value)


def test_validate_spec_accepts() -> None:
    validate_spec(spec(["true"]))
    validate_spec(spec(["/bin/echo", "", "ü", " "], env={"A": "", "lower_1": "=x="}, cwd="/tmp"))


@pytest.mark.parametrize("grace", [-1.0, math.nan, math.inf, 24 * 3600.0 + 1])
def test_validate_grace_rejects(grace: float) -> None:
    with pytest.raises(InvalidArgument, match="grace period must be between 0 and 86400 seconds"):
        validate_grace(grace)


@pytest.mark.parametrize("grace", [None, 0.0, 0.25, 24 * 3600.0])
def test_validate_grace_accepts(grace: float | None) -> None:
    validate_grace(grace)


async def test_start_rejects_invalid_spec_and_records_nothing(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        with pytest.raises(InvalidArgument):
            await manager.start("alice", spec(["true"], cwd="relative"))
        assert (await manager.jobs()).jobs == []
        assert list((tmp_path / "state" / "output").iterdir()) == []


# --- start ------------------------------------------------------------------------------


async def test_start_returns_a_running_job(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        job = await manager.start("alice", spec(python(WAIT), env={"X": "1"}, cwd=str(tmp_path)))
        assert job.state is State.RUNNING
        assert job.owner == "alice"
        assert job.pid is not None and job.pid > 0
        assert job.started_at is not None and job.result is None
        assert job.spec == spec(python(WAIT), env={"X": "1"}, cwd=str(tmp_path))
        assert manager.find(job.id) is job
        assert manager.get(job.id) is job
        assert manager.running() == [job]
        # Recorded as running at once.
        stored = manager.store.get(job.id)
        assert stored is not None and stored.state is State.RUNNING and stored.pid == job.pid
        await wait_for_output(manager.output(job), b"ready")


async def test_start_before_run_is_unavailable(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.claim()
    store = Store(state.database)
    try:
        manager = JobManager(state, store)
        with pytest.raises(Unavailable, match="shutting down"):
            await manager.start("alice", spec(["true"]))
    finally:
        store.close()
        state.release()


async def test_failed_spawn_raises_and_is_listed(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        with pytest.raises(SpawnFailed) as info:
            await manager.start("alice", spec(["/nonexistent/prog"]))
        match = re.fullmatch(
            r"cannot execute '/nonexistent/prog': no such file "
            r"\(job (\S+) recorded as failed to start\)",
            str(info.value),
        )
        assert match, str(info.value)
        job_id = match.group(1)
        page = await manager.jobs()
        assert [j.id for j in page.jobs] == [job_id]
        job = page.jobs[0]
        assert job.state is State.FINISHED
        assert job.result == Result(
            Outcome.FAILED_TO_START, "cannot execute '/nonexistent/prog': no such file"
        )
        assert manager.get(job_id).result == job.result
        assert manager.running() == []  # it never ran
        assert await collect(manager, job) == []


async def test_a_finished_job_is_read_from_the_store_and_its_end_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The manager keeps only running jobs in memory: after thousands of jobs it must not
    # hold their runners, output logs and processes' objects.
    caplog.set_level("INFO", logger="jobd.jobs.manager")
    async with open_manager(tmp_path / "state") as manager:
        job = await manager.start("alice", spec(["true"]))
        with pytest.raises(SpawnFailed):
            await manager.start("alice", spec(["/nonexistent/prog"]))
        finished = await manager.wait_finished(job)
        assert finished.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)
        assert manager.running() == []
        found = manager.find(job.id)
        assert found is not None and found is not job  # from the store, not from a runner
        assert found.result == finished.result
        ended = [r.getMessage() for r in caplog.records if " ended: " in r.getMessage()]
        assert ended == [f"job {job.id} ended: exited with code 0"]  # none for the failure


# --- stop -------------------------------------------------------------------------------


async def test_stop_waits_until_the_job_ended(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", grace=60) as manager:
        job = await manager.start("alice", spec(python(WAIT)))
        await wait_for_output(manager.output(job), b"ready")
        stopped = await manager.stop(job, "bob", grace=30)
        assert stopped is job
        assert job.state is State.FINISHED
        assert job.result == Result(
            Outcome.STOPPED, "stopped by bob (killed by SIGTERM)", None, signal.SIGTERM, "bob"
        )
        assert unfinished(manager) == []
        # What is stored is what the job is.
        assert manager.store.get(job.id) == job


def record_saves(manager: JobManager, monkeypatch: pytest.MonkeyPatch) -> list[tuple[State, bool]]:
    """Each save of a job to the store: its state, and whether it names its process."""
    saves: list[tuple[State, bool]] = []
    save = manager.store.save

    def recording(job: Job) -> None:
        saves.append((job.state, bool(job.process_key)))
        save(job)

    monkeypatch.setattr(manager.store, "save", recording)
    return saves


async def test_the_manager_saves_each_step_of_a_job_before_anyone_hears_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_manager(tmp_path / "state", grace=60) as manager:
        saves = record_saves(manager, monkeypatch)
        job = await manager.start("alice", spec(python(IGNORE_TERM)))
        # Started: saved with its process (a restart could kill it), then as running.
        assert saves == [(State.STARTING, True), (State.RUNNING, True)]
        await wait_for_output(manager.output(job), b"ready")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.stop, job, "bob", 0.2)
            await trio.testing.wait_all_tasks_blocked()
            assert saves[-1] == (State.STOPPING, True)  # before the job has ended
        assert saves[-1][0] is State.FINISHED
        assert manager.store.get(job.id) == job
        assert unfinished(manager) == []


async def test_a_job_that_fails_to_start_is_saved_with_its_launcher_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_manager(tmp_path / "state") as manager:
        saves = record_saves(manager, monkeypatch)
        with pytest.raises(SpawnFailed):
            await manager.start("alice", spec(["/no/such/program"]))
        assert saves == [(State.STARTING, True), (State.FINISHED, True)]


async def test_stop_escalates_with_the_given_grace(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", grace=120) as manager:
        job = await manager.start("alice", spec(python(IGNORE_TERM)))
        await wait_for_output(manager.output(job), b"ready")
        start = trio.current_time()
        await manager.stop(job, "alice", grace=0.3)
        assert 0.3 <= trio.current_time() - start < 10
        assert job.result is not None
        assert (job.result.outcome, job.result.signal) == (Outcome.STOPPED, signal.SIGKILL)


async def test_stop_rejects_a_bad_grace_and_leaves_the_job(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        job = await manager.start("alice", spec(python(WAIT)))
        with pytest.raises(InvalidArgument):
            await manager.stop(job, "alice", grace=-1)
        assert job.state is State.RUNNING and job.stopped_by == ""


async def test_stopping_an_ended_job_returns_it_unchanged(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        job = await manager.start("alice", spec(python("print('hi')")))
        ended = await manager.wait_finished(job)
        assert ended.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)
        before = ended.snapshot()
        assert await manager.stop(ended, "bob") == before
        # And through a record read back from the store, as a client's later call would.
        again = manager.get(job.id)
        assert await manager.stop(again, "bob", grace=0) == before
        assert again.stopped_by == ""


# --- listing ----------------------------------------------------------------------------


async def test_jobs_by_owner_newest_first(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        started = []
        for owner in ("alice", "bob", "alice"):
            job = await manager.start(owner, spec(python("pass")))
            started.append(job)
        running = await manager.start("alice", spec(python(WAIT)))
        for job in started:
            await manager.wait_finished(job)
        a1, b1, a2 = started

        def ids(page: Any) -> list[str]:
            return [j.id for j in page.jobs]

        assert ids(await manager.jobs()) == [running.id, a2.id, b1.id, a1.id]
        assert ids(await manager.jobs("")) == [running.id, a2.id, b1.id, a1.id]
        assert ids(await manager.jobs("alice")) == [running.id, a2.id, a1.id]
        assert ids(await manager.jobs("bob")) == [b1.id]
        assert ids(await manager.jobs("carol")) == []
        # A running job is shown live, as it is now.
        assert (await manager.jobs("alice")).jobs[0] is running

        first = await manager.jobs("alice", limit=2)
        assert ids(first) == [running.id, a2.id] and first.next_token
        rest = await manager.jobs("alice", limit=2, token=first.next_token)
        assert ids(rest) == [a1.id] and rest.next_token == ""


async def test_jobs_rejects_bad_paging(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state") as manager:
        with pytest.raises(InvalidArgument, match=f"at most {MAX_PAGE}"):
            await manager.jobs(limit=MAX_PAGE + 1)
        with pytest.raises(InvalidArgument, match="page_token"):
            await manager.jobs(token="not-a-token")


# --- output -----------------------------------------------------------------------------


async def test_output_of_a_running_job_follows_to_the_end(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b'bye\\n'), os._exit(0)))\n"
        "print('one', flush=True)\n"
        "sys.stderr.write('two\\n'); sys.stderr.flush()\n"
        "time.sleep(120)\n"
    )
    async with open_manager(tmp_path / "state") as manager:
        job = await manager.start("alice", spec(python(code)))
        got: list[Chunk] = []
        seen_two = trio.Event()

        async def follower() -> None:
            async with contextlib.aclosing(manager.output(job)) as batches:
                async for batch in batches:
                    got.extend(batch)
                    if b"two" in by_stream(got)[Stream.STDERR]:
                        seen_two.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await seen_two.wait()
            assert not job.finished
            await manager.stop(job, "alice")
        # The follower ended by itself once the job had ended and it had everything.
        assert by_stream(got) == {Stream.STDOUT: b"one\nbye\n", Stream.STDERR: b"two\n"}
        assert job.result == Result(
            Outcome.STOPPED, "stopped by alice (exited with code 0)", 0, None, "alice"
        )
        assert job.output_bytes == len(b"one\nbye\ntwo\n")


async def test_output_of_a_finished_job(tmp_path: Path) -> None:
    code = "import sys; print('a'); sys.stdout.flush(); sys.stderr.write('b\\n'); print('c')"
    async with open_manager(tmp_path / "state") as manager:
        job = await manager.start("alice", spec(python(code)))
        await manager.wait_finished(job)
        record = manager.get(job.id)
        chunks = await collect(manager, record)
        assert by_stream(chunks) == {Stream.STDOUT: b"a\nc\n", Stream.STDERR: b"b\n"}
        # Resuming after the first chunk gives the rest; one stream; the last line.
        assert await collect(manager, record, offset=chunks[0].next_offset) == chunks[1:]
        only = await collect(manager, record, only=Stream.STDERR)
        assert by_stream(only) == {Stream.STDOUT: b"", Stream.STDERR: b"b\n"}
        tail = await collect(manager, record, only=Stream.STDOUT, tail_lines=1)
        assert by_stream(tail)[Stream.STDOUT] == b"c\n"
        size = chunks[-1].next_offset
        assert await collect(manager, record, offset=size) == []
        with pytest.raises(InvalidArgument, match="past the end"):
            manager.output(record, offset=size + 1)
        with pytest.raises(InvalidArgument, match="not both"):
            manager.output(record, offset=1, tail_lines=1)


async def test_output_cap(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 5000)"
    async with open_manager(tmp_path / "state", output_cap=1000) as manager:
        job = await manager.start("alice", spec(python(code)))
        await manager.wait_finished(job)
        assert by_stream(await collect(manager, job))[Stream.STDOUT] == b"x" * 1000
        assert (job.output_bytes, job.output_dropped_bytes) == (1000, 4000)
        assert "cap" in job.output_error
        assert job.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)


# --- shutdown ---------------------------------------------------------------------------


async def test_shutdown_stops_every_job_and_refuses_new_ones(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", grace=60) as manager:
        jobs = [await manager.start(owner, spec(python(WAIT))) for owner in ("alice", "bob")]
        done = await manager.wait_finished(await manager.start("carol", spec(python("pass"))))
        for job in jobs:
            await wait_for_output(manager.output(job), b"ready")
        await manager.shutdown(grace=30)
        assert manager.closing
        assert unfinished(manager) == []
        for job in jobs:
            assert job.state is State.FINISHED
            assert job.result == Result(
                Outcome.STOPPED,
                "stopped by jobd (shutdown) (killed by SIGTERM)",
                None,
                signal.SIGTERM,
                SHUTDOWN,
            )
            assert manager.store.get(job.id) == job
        # A job that had ended before keeps its result.
        assert done.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)
        with pytest.raises(Unavailable):
            await manager.start("alice", spec(["true"]))


async def test_kill_all_now_skips_the_grace_period(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", grace=120) as manager:
        job = await manager.start("alice", spec(python(IGNORE_TERM)))
        await wait_for_output(manager.output(job), b"ready")
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.shutdown)  # the default grace: two minutes
            await trio.testing.wait_all_tasks_blocked()
            assert job.state is State.STOPPING  # SIGTERM sent and ignored
            manager.kill_all_now()
        assert trio.current_time() - start < 10
        assert job.result == Result(
            Outcome.STOPPED,
            "stopped by jobd (shutdown) (killed by SIGKILL)",
            None,
            signal.SIGKILL,
            SHUTDOWN,
        )
        with pytest.raises(Unavailable):
            await manager.start("alice", spec(["true"]))


async def test_kill_all_now_without_shutdown(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", grace=120) as manager:
        job = await manager.start("alice", spec(python(IGNORE_TERM)))
        await wait_for_output(manager.output(job), b"ready")
        manager.kill_all_now()
        assert manager.closing
        ended = await manager.wait_finished(job)
        assert ended.result is not None
        assert (ended.result.stopped_by, ended.result.signal) == (SHUTDOWN, signal.SIGKILL)


async def test_shutdown_while_a_start_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_spawn = supervisor.spawn
    async with open_manager(tmp_path / "state", grace=5) as manager:
        outcome: list[BaseException | Job] = []

        async def start() -> None:
            try:
                outcome.append(await manager.start("alice", spec(python(WAIT))))
            except Exception as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:

            def spawn_as_shutdown_begins(*args: Any, **kwargs: Any) -> Child:
                # Shutdown runs at the start's next checkpoint: after the spawn, before the
                # manager has registered the job.
                nursery.start_soon(manager.shutdown)
                return real_spawn(*args, **kwargs)

            monkeypatch.setattr(supervisor, "spawn", spawn_as_shutdown_begins)
            nursery.start_soon(start)
        # Once shutdown() and start() have both returned, nothing may be running.
        assert unfinished(manager) == []
        assert len(outcome) == 1
        if isinstance(outcome[0], Job):
            assert outcome[0].finished


# --- recovery ---------------------------------------------------------------------------


async def test_jobs_left_running_by_a_dead_daemon_are_killed_and_marked_lost(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path / "state")
    state.claim()
    store = Store(state.database)
    orphan = await trio.lowlevel.open_process(["sleep", "300"], start_new_session=True)
    try:
        job = Job(id="from-before", owner="alice", spec=spec(["sleep", "300"]))
        job.spawned(orphan.pid)
        job.process_key = procid.identity(orphan.pid)
        store.save(job)
        store.close()
        state.release()

        async with open_manager(tmp_path / "state") as manager:
            record = manager.get("from-before")
            assert record.state is State.FINISHED
            assert record.result == Result(Outcome.LOST, LOST)
            assert record.pid is None
            with trio.fail_after(PROCESS_TIMEOUT):
                await wait_process_exit(orphan.pid)
        with trio.fail_after(PROCESS_TIMEOUT):
            assert await orphan.wait() == -signal.SIGKILL
    finally:
        with trio.CancelScope(shield=True):
            if orphan.poll() is None:
                orphan.kill()
                await orphan.wait()


async def test_a_lost_jobs_log_is_measured_after_the_daemon_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A log of tiny frames takes ~0.37 s per million to walk: a daemon that died with such a
    # job must not make the next one wait for the walk before it serves.
    state = StateDir(tmp_path / "state")
    state.claim()
    store = Store(state.database)
    job = Job(id="from-before", owner="alice", spec=spec(["true"]))
    job.spawned(12345678)  # no such process: nothing to kill
    store.save(job)
    store.close()
    OutputLog(state.log_path(job.id)).append(Stream.STDOUT, b"what the log holds")
    state.release()

    walk_may_end = threading.Event()
    walked: list[bool] = []

    def slow_size(path: Path) -> int:
        walk_may_end.wait(timeout=5)  # the old code walked on the loop: then this blocks it
        walked.append(True)
        return output.data_size(path)

    monkeypatch.setattr(manager_module, "data_size", slow_size)
    async with open_manager(tmp_path / "state") as manager:
        assert walked == []  # ready, and the walk still running on its thread
        record = manager.get("from-before")
        assert record.result == Result(Outcome.LOST, LOST) and record.output_bytes == 0
        walk_may_end.set()
        with trio.fail_after(5):
            await manager.lost_measured.wait()
        assert manager.get("from-before").output_bytes == len(b"what the log holds")

    # A shutdown does not wait for a walk that has not ended (it only reads a file).
    walk_may_end.clear()
    store = Store(state.database)
    job.output_bytes = 0
    job.result = None
    job.state = State.RUNNING
    store.save(job)
    store.close()
    with trio.fail_after(4):  # the walk would hold it up 5 s
        async with open_manager(tmp_path / "state"):
            pass
    walk_may_end.set()
