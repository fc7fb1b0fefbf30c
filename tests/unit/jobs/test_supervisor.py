"""The supervisor with real processes: spawn, isolation, output, stop escalation, clean-up."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers_unit import (
    PROCESS_TIMEOUT,
    by_stream,
    process_gone_or_zombie,
    python,
    read_all,
    running,
    wait_for_output,
    wait_process_exit,
)

from jobd.jobs import supervisor
from jobd.jobs.output import OutputLog, Stream, follow
from jobd.jobs.supervisor import JobRunner, job_environment
from jobd.launch.spawn import Child
from jobd.launch.system import SYSTEM_PATH
from jobd.model.job import Job, JobSpec, Outcome, Result, State


def make_file(path: Path, mode: int, text: str = "#!/bin/sh\necho hi\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_job_environment_is_minimal() -> None:
    assert job_environment("j-1", {}) == {
        "PATH": SYSTEM_PATH,
        "HOME": "/",
        "LANG": "C.UTF-8",
        "JOBD_JOB_ID": "j-1",
    }


def test_job_environment_request_overrides() -> None:
    env = job_environment("j-1", {"PATH": "/opt/bin", "FOO": "bar", "LANG": "C"})
    assert env == {
        "PATH": "/opt/bin",
        "HOME": "/",
        "LANG": "C",
        "JOBD_JOB_ID": "j-1",
        "FOO": "bar",
    }


# --- running jobs -----------------------------------------------------------------------


def make_runner(
    tmp_path: Path,
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    grace: float = 30.0,
) -> JobRunner:
    job = Job(id=str(uuid.uuid4()), owner="alice", spec=JobSpec(tuple(argv), env or {}, cwd))
    return JobRunner(job, OutputLog(tmp_path / f"{job.id}.log"), grace)


async def run_to_end(runner: JobRunner) -> dict[Stream, bytes]:
    async with running(runner):
        await runner.done.wait()
    return by_stream(await read_all(runner.output.log.path))


def output_of(runner: JobRunner) -> AsyncIterator[Any]:
    return follow(runner.output.log.path, runner.output)


async def test_output_and_exit_code(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.stdout.write('out 1\\n'); sys.stdout.flush()\n"
        "sys.stderr.write('err 1\\n'); sys.stderr.flush()\n"
        "sys.stdout.write('out 2\\n'); sys.stdout.flush()\n"
        "sys.exit(3)\n"
    )
    runner = make_runner(tmp_path, python(code))
    async with running(runner):
        job = runner.job
        assert job.state is State.RUNNING
        assert job.pid is not None and job.pid > 0
        assert job.started_at is not None
        assert job.process_key.endswith(f"/{job.pid}")
        await runner.done.wait()
    output = by_stream(await read_all(runner.output.log.path))
    assert output == {Stream.STDOUT: b"out 1\nout 2\n", Stream.STDERR: b"err 1\n"}
    assert job.state is State.FINISHED
    assert job.result == Result(Outcome.EXITED, "exited with code 3", exit_code=3)
    assert job.pid is None
    assert job.output_bytes == runner.output.log.data_bytes == len(b"out 1\nout 2\nerr 1\n")
    assert (job.output_dropped_bytes, job.output_error) == (0, "")
    assert runner.output.closed


async def test_output_bytes_exactly(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4 + b"\xff\xfe no newline"
    code = f"import sys; sys.stdout.buffer.write({payload!r})"
    runner = make_runner(tmp_path, python(code))
    output = await run_to_end(runner)
    assert output[Stream.STDOUT] == payload
    assert runner.job.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)


async def test_large_fast_output_is_complete(tmp_path: Path) -> None:
    size = 3 * 1024 * 1024 + 17
    code = f"import sys; sys.stdout.buffer.write(bytes(range(251)) * ({size} // 251) + b'end')"
    runner = make_runner(tmp_path, python(code))
    output = await run_to_end(runner)
    assert output[Stream.STDOUT] == bytes(range(251)) * (size // 251) + b"end"


async def test_output_of_a_process_that_exits_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process has written and exited before the runner looks at it: nothing is lost."""
    real_spawn = supervisor.spawn

    def spawn_and_wait_for_exit(*args: Any, **kwargs: Any) -> Child:
        child = real_spawn(*args, **kwargs)
        # Block until the child has exited, without reaping it (the runner still does).
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        return child

    monkeypatch.setattr(supervisor, "spawn", spawn_and_wait_for_exit)
    for _ in range(20):  # the order the runner's tasks are scheduled in varies from run to run
        runner = make_runner(tmp_path, ["sh", "-c", "echo out; echo err >&2"])
        output = await run_to_end(runner)
        assert output == {Stream.STDOUT: b"out\n", Stream.STDERR: b"err\n"}


async def test_stdin_is_dev_null(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "data = sys.stdin.buffer.read()\n"
        "print(len(data), os.readlink('/proc/self/fd/0'))\n"
    )
    runner = make_runner(tmp_path, python(code))
    output = await run_to_end(runner)
    assert output[Stream.STDOUT] == b"0 /dev/null\n"


async def test_no_inherited_file_descriptors(tmp_path: Path) -> None:
    leak = os.open(tmp_path / "leak", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.set_inheritable(leak, True)
        assert os.get_inheritable(leak)
        code = (
            "import json, os\n"
            "def is_open(fd):\n"
            "    try:\n"
            "        os.fstat(fd)\n"
            "    except OSError:\n"
            "        return False\n"
            "    return True\n"
            "listed = [int(fd) for fd in os.listdir('/proc/self/fd')]\n"
            # listdir's own descriptor is in the listing but closed by now.
            f"print(json.dumps([fd for fd in listed if is_open(fd)] + [is_open({leak})]))\n"
        )
        runner = make_runner(tmp_path, python(code))
        output = await run_to_end(runner)
    finally:
        os.close(leak)
    assert json.loads(output[Stream.STDOUT]) == [0, 1, 2, False]
    assert output[Stream.STDERR] == b""


async def test_job_leads_its_own_session_and_group(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(),\n"
        f"      os.getsid(0) != {os.getsid(0)})\n"
    )
    runner = make_runner(tmp_path, python(code))
    output = await run_to_end(runner)
    assert output[Stream.STDOUT] == b"True True True\n"


async def test_environment_is_minimal_and_nothing_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBD_TEST_SECRET", "daemon-only")
    assert os.environ["JOBD_TEST_SECRET"] == "daemon-only"
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    runner = make_runner(tmp_path, python(code), env={"FOO": "bar baz", "EMPTY": ""})
    output = await run_to_end(runner)
    env = json.loads(output[Stream.STDOUT])
    assert "JOBD_TEST_SECRET" not in env
    assert env == {
        "PATH": SYSTEM_PATH,
        "HOME": "/",
        "LANG": "C.UTF-8",
        "JOBD_JOB_ID": runner.job.id,
        "FOO": "bar baz",
        "EMPTY": "",
    }


async def test_cwd_and_request_path(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    make_file(bindir / "where", 0o755, '#!/bin/sh\npwd\necho "$0"\n')
    runner = make_runner(tmp_path, ["where"], env={"PATH": str(bindir)}, cwd=str(tmp_path))
    output = await run_to_end(runner)
    assert output[Stream.STDOUT] == f"{tmp_path}\n{bindir / 'where'}\n".encode()


# --- stopping ---------------------------------------------------------------------------

IGNORE_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
WAIT = "import time; print('ready', flush=True); time.sleep(120)"


async def test_stop_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, python(IGNORE_TERM), grace=30.0)
    async with running(runner):
        await wait_for_output(output_of(runner), b"ready")
        start = trio.current_time()
        runner.request_stop("alice", 0.5)
        assert runner.job.state is State.STOPPING
        assert runner.job.stopped_by == "alice"
        await runner.done.wait()
        elapsed = trio.current_time() - start
    assert 0.5 <= elapsed < 10
    assert runner.job.result == Result(
        Outcome.STOPPED, "stopped by alice (killed by SIGKILL)", None, signal.SIGKILL, "alice"
    )


async def test_stop_with_default_grace(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, python(IGNORE_TERM), grace=0.3)
    async with running(runner):
        await wait_for_output(output_of(runner), b"ready")
        start = trio.current_time()
        runner.request_stop("alice")
        await runner.done.wait()
        elapsed = trio.current_time() - start
    assert 0.3 <= elapsed < 10
    assert runner.job.result is not None and runner.job.result.signal == signal.SIGKILL


async def test_stop_of_a_job_that_exits_on_sigterm(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, python(WAIT), grace=60.0)
    async with running(runner):
        await wait_for_output(output_of(runner), b"ready")
        start = trio.current_time()
        runner.request_stop("bob")
        await runner.done.wait()
        elapsed = trio.current_time() - start
    assert elapsed < 10  # nowhere near the 60 s grace
    assert runner.job.result == Result(
        Outcome.STOPPED, "stopped by bob (killed by SIGTERM)", None, signal.SIGTERM, "bob"
    )


async def test_stop_of_a_job_that_cleans_up_and_exits(tmp_path: Path) -> None:
    code = (
        "import os, signal, time\n"
        # os.write and os._exit: the signal may come while print('ready') is still returning.
        "def bye(*_):\n"
        "    os.write(1, b'bye\\n')\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    runner = make_runner(tmp_path, python(code), grace=60.0)
    async with running(runner):
        await wait_for_output(output_of(runner), b"ready")
        runner.request_stop("bob")
        await runner.done.wait()
    assert runner.job.result == Result(
        Outcome.STOPPED, "stopped by bob (exited with code 0)", 0, None, "bob"
    )
    assert by_stream(await read_all(runner.output.log.path))[Stream.STDOUT] == b"ready\nbye\n"


@pytest.mark.parametrize("settle", [False, True], ids=["at-once", "during-grace"])
async def test_second_stop_shortens_grace(tmp_path: Path, settle: bool) -> None:
    runner = make_runner(tmp_path, python(IGNORE_TERM))
    async with running(runner):
        await wait_for_output(output_of(runner), b"ready")
        start = trio.current_time()
        runner.request_stop("alice", 120)
        if settle:
            await trio.testing.wait_all_tasks_blocked()  # the grace period is running now
        runner.request_stop("bob", 0.2)
        await runner.done.wait()
        elapsed = trio.current_time() - start
    assert elapsed < 10
    # The first request is the one on record.
    assert runner.job.result == Result(
        Outcome.STOPPED, "stopped by alice (killed by SIGKILL)", None, signal.SIGKILL, "alice"
    )


@pytest.mark.parametrize("settle", [False, True], ids=["at-once", "during-grace"])
async def test_second_stop_cannot_lengthen_grace(tmp_path: Path, settle: bool) -> None:
    runner = make_runner(tmp_path, python(IGNORE_TERM))
    async with running(runner):
        await wait_for_output(output_of(runner), b"ready")
        start = trio.current_time()
        runner.request_stop("alice", 0.2)
        if settle:
            await trio.testing.wait_all_tasks_blocked()
        runner.request_stop("bob", 120)
        await runner.done.wait()
        elapsed = trio.current_time() - start
    assert 0.2 <= elapsed < 10


async def test_stop_between_spawn_and_supervision_keeps_its_grace(tmp_path: Path) -> None:
    # The manager spawns, then starts supervise() with start_soon: a stop can come in between.
    runner = make_runner(tmp_path, python(IGNORE_TERM))
    with trio.fail_after(PROCESS_TIMEOUT):
        child = runner.spawn()
        assert child is not None
        assert await child.stdout.receive_some() == b"ready\n"  # SIGTERM is ignored now
        start = trio.current_time()
        runner.request_stop("alice", 0.3)
        await runner.supervise(child)
        elapsed = trio.current_time() - start
    assert 0.3 <= elapsed < 10
    assert runner.job.result == Result(
        Outcome.STOPPED, "stopped by alice (killed by SIGKILL)", None, signal.SIGKILL, "alice"
    )


async def test_stops_before_the_launch_is_confirmed_keep_the_shortest_grace(
    tmp_path: Path,
) -> None:
    runner = make_runner(tmp_path, python(IGNORE_TERM))
    with trio.fail_after(PROCESS_TIMEOUT):
        child = runner.spawn()
        assert child is not None and runner.job.state is State.STARTING
        runner.request_stop("alice", 0)  # kill at once, once it runs
        runner.request_stop("bob", 60)  # cannot lengthen that
        start = trio.current_time()
        await runner.supervise(child)
        elapsed = trio.current_time() - start
    assert elapsed < 10  # not bob's 60 s: whichever signal it died of, it did at once
    assert runner.job.result is not None and runner.job.result.stopped_by == "alice"


async def test_stop_after_the_end_changes_nothing(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, python("pass"))
    await run_to_end(runner)
    result = runner.job.result
    runner.request_stop("alice", 0)
    assert runner.job.result == result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)
    assert runner.job.stopped_by == ""


# --- what is left behind ----------------------------------------------------------------

SPAWN_SLEEPER = "import subprocess, sys\np = subprocess.Popen({argv!r})\nprint(p.pid, flush=True)\n"


async def test_main_exit_kills_the_rest_of_its_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = SPAWN_SLEEPER.format(argv=["sleep", "300"])
    runner = make_runner(tmp_path, python(code))
    async with running(runner):
        pid = int(await wait_for_output(output_of(runner), b"\n"))
        try:
            await runner.done.wait()
            # The sleeper, orphaned and then SIGKILLed with the group, is gone.
            with trio.fail_after(5):
                await wait_process_exit(pid)
            assert process_gone_or_zombie(pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert runner.job.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)
    # It held the job's stdout open; killing it let the pumps reach end-of-file at once.
    assert "held open after exit" not in caplog.text


async def test_a_descendant_that_escaped_the_group_does_not_hold_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "DRAIN_TIMEOUT", 0.3)
    code = SPAWN_SLEEPER.format(argv=["setsid", "sleep", "300"])
    runner = make_runner(tmp_path, python(code))
    pid = 0
    try:
        with caplog.at_level(logging.WARNING, logger="jobd.jobs.supervisor"):
            async with running(runner):
                pid = int(await wait_for_output(output_of(runner), b"\n"))
                await runner.done.wait()
        assert runner.job.result == Result(Outcome.EXITED, "exited with code 0", exit_code=0)
        assert "output pipe held open after exit; not read" in caplog.text
        assert by_stream(await read_all(runner.output.log.path))[Stream.STDOUT] == b"%d\n" % pid
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with trio.fail_after(PROCESS_TIMEOUT):
                await wait_process_exit(pid)


async def test_cancelling_the_runner_kills_the_whole_group(tmp_path: Path) -> None:
    code = SPAWN_SLEEPER.format(argv=["sleep", "300"]) + "import time; time.sleep(300)\n"
    runner = make_runner(tmp_path, python(code))
    grandchild = 0
    try:
        async with running(runner):
            main_pid = runner.job.pid
            assert main_pid is not None
            grandchild = int(await wait_for_output(output_of(runner), b"\n"))
        # The runner's clean-up ran shielded: killed, reaped and recorded before we got here.
        assert runner.done.is_set()
        assert runner.job.result == Result(Outcome.SIGNALED, "killed by SIGKILL", signal=9)
        assert runner.job.state is State.FINISHED
        assert process_gone_or_zombie(main_pid)
        with pytest.raises(ChildProcessError):
            os.waitpid(main_pid, os.WNOHANG)  # noqa: ASYNC222 (never blocks: already reaped)
        with trio.fail_after(5):
            await wait_process_exit(grandchild)
    finally:
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)


# --- failing to start -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "cwd", "message"),
    [
        (["/nonexistent/prog"], "/", "cannot execute '/nonexistent/prog': no such file"),
        (["jobd-no-such-command"], "/",
         f"cannot execute 'jobd-no-such-command': command not found in PATH={SYSTEM_PATH}"),
        (["sh"], "/nonexistent", "working directory '/nonexistent' does not exist"),
    ],
)  # fmt: skip
async def test_spawn_failure_is_recorded(
    tmp_path: Path, argv: list[str], cwd: str, message: str
) -> None:
    runner = make_runner(tmp_path, argv, cwd=cwd)
    async with running(runner):
        await runner.done.wait()  # the launcher reported it and exited
    job = runner.job
    assert job.state is State.FINISHED
    assert job.result == Result(Outcome.FAILED_TO_START, message)
    assert job.pid is None and job.started_at is None and job.ended_at is not None
    assert runner.output.closed
    assert await read_all(runner.output.log.path) == []


async def test_exec_error_is_recorded(tmp_path: Path) -> None:
    # Executable, but not a program the kernel can run: exec itself fails.
    prog = make_file(tmp_path / "script", 0o755, "echo no shebang line\n")
    prog.write_bytes(b"\x00\x01\x02 not a program")
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    runner = make_runner(tmp_path, [str(prog)])
    async with running(runner):
        pass
    assert runner.job.result is not None
    assert runner.job.result.outcome is Outcome.FAILED_TO_START
    assert runner.job.result.message == (
        f"cannot execute {str(prog)!r}: not an executable format (neither ELF nor a #! script)"
    )


def test_python_helper() -> None:
    assert python("pass") == [sys.executable, "-c", "pass"]
    assert subprocess.run(python("print(6 * 7)"), capture_output=True, check=True).stdout == b"42\n"
