"""One job's life: spawn its process, pump its output into the log, enforce stop, record exit.

A job's process leads its own session and process group, reads /dev/null, inherits no file
descriptor but its two output pipes, and gets a minimal environment. When the main process
exits, whatever is left of its process group is killed, as systemd does for a service's
control group.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import signal
import subprocess
from collections.abc import Callable, Mapping

import trio

from jobd import procid
from jobd.errors import SpawnFailed
from jobd.job import Job, State
from jobd.output import MAX_FRAME_DATA, OutputLog, Stream

log = logging.getLogger(__name__)

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# After the main process exits and its group is killed, a process that escaped the group
# (setsid) may still hold a pipe open; stop reading after this long rather than never end.
DRAIN_TIMEOUT = 2.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def job_environment(job_id: str, requested: Mapping[str, str]) -> dict[str, str]:
    """The documented minimal environment, then whatever the request sets."""
    env = {"PATH": BASE_PATH, "HOME": "/", "LANG": "C.UTF-8", "JOBD_JOB_ID": job_id}
    env.update(requested)
    return env


def resolve_executable(argv0: str, search_path: str, cwd: str) -> str:
    """The file ``execve`` will run for ``argv0``, or a SpawnFailed that says why not."""
    if "/" in argv0:
        path = os.path.join(cwd, argv0)
        if not os.path.exists(path):
            raise SpawnFailed(f"cannot execute {argv0!r}: no such file")
        if os.path.isdir(path):
            raise SpawnFailed(f"cannot execute {argv0!r}: is a directory")
        if not os.access(path, os.X_OK):
            raise SpawnFailed(f"cannot execute {argv0!r}: permission denied")
        return path
    for entry in search_path.split(":"):
        path = os.path.join(cwd, entry or ".", argv0)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise SpawnFailed(f"cannot execute {argv0!r}: command not found in PATH={search_path}")


def check_cwd(cwd: str) -> None:
    if not os.path.isdir(cwd):
        why = "is not a directory" if os.path.exists(cwd) else "does not exist"
        raise SpawnFailed(f"working directory {cwd!r} {why}")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _grow_pipe(pipe: trio.abc.ReceiveStream) -> None:
    # Fewer, larger reads when a job writes fast; the default 64 KiB is fine if refused.
    if isinstance(pipe, trio.lowlevel.FdStream):
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, MAX_FRAME_DATA)


class JobRunner:
    """Owns one job's process and output while it runs. Created and run by the manager."""

    def __init__(
        self,
        job: Job,
        output: OutputLog,
        default_grace: float,
        on_change: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.job = job
        self.output = output
        self._on_change = on_change
        self.done = trio.Event()
        self._default_grace = default_grace
        self._stop_requested = trio.Event()
        self._grace = default_grace
        self._grace_scope: trio.CancelScope | None = None

    def request_stop(self, by: str, grace: float | None = None) -> None:
        """Ask the job to stop: SIGTERM now, SIGKILL after ``grace`` seconds.

        A second request can only shorten the grace period that is running.
        """
        grace = self._default_grace if grace is None else grace
        if self.job.state is State.RUNNING:
            self.job.stop(by)
            self._on_change(self.job)
            self._grace = grace
            self._stop_requested.set()
        elif self.job.state is State.STOPPING and self._grace_scope is not None:
            deadline = trio.current_time() + grace
            self._grace_scope.deadline = min(self._grace_scope.deadline, deadline)
        elif self.job.state is State.STOPPING:
            self._grace = min(self._grace, grace)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        spec = self.job.spec
        env = job_environment(self.job.id, spec.env)
        try:
            check_cwd(spec.cwd)
            executable = resolve_executable(spec.argv[0], env.get("PATH", ""), spec.cwd)
            proc = await trio.lowlevel.open_process(
                list(spec.argv),
                executable=executable,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                env=env,
                cwd=spec.cwd,
            )
        except (SpawnFailed, OSError) as exc:
            message = str(exc) if isinstance(exc, SpawnFailed) else _spawn_error(spec.argv[0], exc)
            self.job.spawn_failed(message)
            self.output.close()
            self._on_change(self.job)
            self.done.set()
            task_status.started()
            return
        self.job.spawned(proc.pid)
        self.job.process_key = procid.identity(proc.pid)
        self._on_change(self.job)
        task_status.started()
        try:
            await self._supervise(proc)
        finally:
            with trio.CancelScope(shield=True):
                await self._reap(proc)

    async def _supervise(self, proc: trio.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        async with trio.open_nursery() as nursery:
            stopper = trio.CancelScope()
            nursery.start_soon(self._enforce_stop, proc.pid, stopper)
            async with trio.open_nursery() as pumps:
                for pipe, stream in ((proc.stdout, Stream.STDOUT), (proc.stderr, Stream.STDERR)):
                    _grow_pipe(pipe)
                    pumps.start_soon(self._pump, pipe, stream)
                await proc.wait()
                stopper.cancel()  # no stop signals once the pid may be reused
                _signal_group(proc.pid, signal.SIGKILL)
                pumps.cancel_scope.deadline = trio.current_time() + DRAIN_TIMEOUT
            if pumps.cancel_scope.cancelled_caught:
                log.warning("job %s: output pipe held open after exit; not read", self.job.id)

    async def _pump(self, pipe: trio.abc.ReceiveStream, stream: Stream) -> None:
        async with pipe:
            while data := await pipe.receive_some(MAX_FRAME_DATA):
                self.output.append(stream, data)
                self.job.output_bytes = self.output.data_bytes
                self.job.output_dropped_bytes = self.output.dropped_bytes
                if self.output.error and not self.job.output_error:
                    self.job.output_error = self.output.error

    async def _enforce_stop(self, pgid: int, scope: trio.CancelScope) -> None:
        with scope:
            await self._stop_requested.wait()
            _signal_group(pgid, signal.SIGTERM)
            with trio.move_on_after(self._grace) as grace:
                self._grace_scope = grace
                await trio.sleep_forever()
            self._grace_scope = None
            log.info("job %s: alive %.1fs after SIGTERM; sending SIGKILL", self.job.id, self._grace)
            _signal_group(pgid, signal.SIGKILL)

    async def _reap(self, proc: trio.Process) -> None:
        """Runs shielded on every way out: the process is dead and recorded when it returns."""
        if proc.returncode is None:  # cancelled from outside: the daemon is going away fast
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                await pipe.aclose()
        assert proc.returncode is not None
        self.job.exited(proc.returncode)
        self.job.output_dropped_bytes = self.output.dropped_bytes
        self.job.output_error = self.output.error or ""
        self.output.close()
        self._on_change(self.job)
        self.done.set()


def _spawn_error(argv0: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOEXEC:
        reason = "not an executable format (a script without #! line?)"
    return f"cannot execute {argv0!r}: {reason}"


def grace_is_valid(grace: float) -> bool:
    return math.isfinite(grace) and 0 <= grace <= 24 * 3600
