"""One job's life: spawn its process, pump its output into the log, enforce stop, record exit.

A job's process leads its own session and process group, reads /dev/null, inherits no file
descriptor but its two output pipes, and gets a minimal environment. With cgroups it starts
as a shim that writes its own pid into every ``cgroup.procs`` of the job and then execs the
command (see ``jobd.cgroups.shim``): the job is contained from its first instruction, and the
daemon never takes the slow fork() path that ``preexec_fn`` would force. A job with isolation
runs its command through ``unshare`` and a short setup script next in that chain (see
``jobd.isolation``), and a job of another account drops to it last, through ``setpriv`` (see
``jobd.privdrop``). The process is spawned on the trio thread and waited for through a pidfd
(``jobd.spawn``). When the main process exits, what is left of the job (its cgroup, or at
least its process group) is killed, as systemd does for a service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import math
import os
import signal
import stat
from collections.abc import Callable, Mapping

import trio

from jobd import privdrop, procid
from jobd.accounts import Account
from jobd.cgroups.base import JobCgroup
from jobd.cgroups.shim import shim_command
from jobd.errors import SpawnFailed
from jobd.impersonate import seen_by
from jobd.isolation import Isolator
from jobd.job import Job, State
from jobd.output import MAX_FRAME_DATA, OutputLog, Stream
from jobd.readfile import read_bytes
from jobd.spawn import Child, spawn
from jobd.system import SYSTEM_PATH
from jobd.units import format_size

log = logging.getLogger(__name__)

# After the main process exits and its group is killed, a process that escaped the group
# (setsid) may still hold a pipe open; stop reading after this long rather than never end.
DRAIN_TIMEOUT = 2.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# A stuck cgroup (a task in uninterruptible sleep) must not hang the daemon's shutdown.
EMPTY_TIMEOUT = 10.0
NOT_EXECUTABLE = "not an executable format (neither ELF nor a #! script)"
DENIED = "permission denied"


def job_environment(
    job_id: str, requested: Mapping[str, str], account: Account | None = None
) -> dict[str, str]:
    """The documented minimal environment, then whatever the request sets."""
    env = {"PATH": SYSTEM_PATH, "HOME": "/", "LANG": "C.UTF-8", "JOBD_JOB_ID": job_id}
    if account is not None:
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    env.update(requested)
    return env


def resolve_executable(
    argv0: str, search_path: str, cwd: str, account: Account | None = None
) -> str:
    """The file ``execve`` will run for ``argv0`` as ``account`` would find it (None: as the
    daemon), after checking that the account can change into ``cwd``; or a SpawnFailed that
    says why not. Both checks run under one switch of ids (~30 µs)."""
    who = _as(account)
    with seen_by(account) if account else contextlib.nullcontext():
        _check_cwd(cwd, who)
        path = _find(argv0, search_path, cwd, who)
    # As the daemon: a program may be executable by the account without being readable.
    _check_format(argv0, path)
    return path


def _as(account: Account | None) -> str:
    return f" (as {account.name})" if account else ""


def _find(argv0: str, search_path: str, cwd: str, who: str) -> str:
    if "/" in argv0:
        path = os.path.join(cwd, argv0)
        problem = _not_runnable(path)
        if problem:
            raise SpawnFailed(f"cannot execute {argv0!r}: {problem}{who}")
        return path
    denied = ""
    for entry in search_path.split(":"):
        path = os.path.join(cwd, entry or ".", argv0)
        problem = _not_runnable(path)
        if not problem:
            return path
        denied = denied or (path if problem == DENIED else "")
    if denied:  # as execvp reports it: found, but not allowed
        raise SpawnFailed(f"cannot execute {argv0!r}: {DENIED} ({denied}){who}")
    raise SpawnFailed(f"cannot execute {argv0!r}: command not found in PATH={search_path}")


def _not_runnable(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except PermissionError:
        return DENIED
    except OSError:
        return "no such file"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode) or not os.access(path, os.X_OK):
        return DENIED
    return ""


def _check_format(argv0: str, path: str) -> None:
    # execve refuses anything but a binary or a #! script; the /bin/sh shim's exec would
    # instead run such a file as a shell script. Refuse it here, as execve would.
    try:
        magic = read_bytes(path, 4)
    except OSError as exc:
        raise SpawnFailed(f"cannot execute {argv0!r}: {exc.strerror}") from None
    if magic != b"\x7fELF" and not magic.startswith(b"#!"):
        raise SpawnFailed(f"cannot execute {argv0!r}: {NOT_EXECUTABLE}")


def _check_cwd(cwd: str, who: str) -> None:
    problem = ""
    try:
        mode = os.stat(cwd).st_mode
    except PermissionError:
        problem = f"is not accessible ({DENIED})"
    except OSError:
        problem = "does not exist"
    else:
        if not stat.S_ISDIR(mode):
            problem = "is not a directory"
        elif not os.access(cwd, os.X_OK):
            problem = f"is not accessible ({DENIED})"
    if problem:
        raise SpawnFailed(f"working directory {cwd!r} {problem}{who}")


def _grow_pipe(pipe: trio.abc.ReceiveStream) -> None:
    # Fewer, larger reads when a job writes fast; the default 64 KiB is fine if refused.
    if isinstance(pipe, trio.lowlevel.FdStream):
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, MAX_FRAME_DATA)


class JobRunner:
    """Owns one job's process, cgroup and output while it runs. Created and run by the manager."""

    def __init__(
        self,
        job: Job,
        output: OutputLog,
        default_grace: float,
        on_change: Callable[[Job], None] = lambda job: None,
        cgroup: JobCgroup | None = None,
        isolator: Isolator | None = None,
        account: Account | None = None,
        switch: bool = False,
    ) -> None:
        self.job = job
        # The account the job runs as (its HOME, USER), and whether that means switching
        # from the daemon's own (else the checks and the chain stay as the daemon's).
        self.account = account
        self.switch = switch and account is not None
        self.output = output
        self.cgroup = cgroup
        self.isolator = isolator
        self._on_change = on_change
        self.done = trio.Event()
        self._default_grace = default_grace
        self._child: Child | None = None
        # When a stop's grace period ends (trio time), and the scope its wait for the exit
        # runs in: a stop needs no task of its own (see request_stop and _wait_or_kill).
        self._grace_deadline = math.inf
        self._grace_scope: trio.CancelScope | None = None
        self._stopped_at = 0.0  # trio time of the first stop request
        self._oom = False

    def request_stop(self, by: str, grace: float | None = None) -> None:
        """Ask the job to stop: SIGTERM now, SIGKILL after ``grace`` seconds.

        A second request can only shorten the grace period that is running.
        """
        grace = self._default_grace if grace is None else grace
        if self.job.state is State.RUNNING:
            self.job.stop(by)
            self._on_change(self.job)
            self._stopped_at = trio.current_time()
            if self._child is not None and self._child.returncode is None:
                self._child.send_signal(signal.SIGTERM, group=True)
                if self.cgroup is not None:  # descendants that left the process group too
                    self.cgroup.terminate()
        elif self.job.state is not State.STOPPING:
            return
        self._grace_deadline = min(self._grace_deadline, trio.current_time() + grace)
        if self._grace_scope is not None:
            self._grace_scope.deadline = self._grace_deadline

    def refresh_usage(self) -> None:
        if self.cgroup is not None and not self.job.finished:
            self.job.usage = self.cgroup.usage()

    def spawn(self) -> Child | None:
        """Start the job's process and record the job as running; or record it as failed to
        start (then it is done) and return None. Nothing here waits: the manager spawns and
        registers a job in one step, and starts :meth:`supervise` without a round trip."""
        spec = self.job.spec
        base = job_environment(self.job.id, {}, self.account)
        env = {**base, **spec.env}
        account = self.account if self.switch else None
        try:
            program = resolve_executable(spec.argv[0], env.get("PATH", ""), spec.cwd, account)
            executable = program
            # The spawn chain, innermost first: the command; as another account, the loader
            # of its environment and setpriv, so privileges are dropped last, after the
            # namespaces are made; the namespaces; the cgroup shim, so that all of it runs in
            # the job's cgroups.
            argv = list(spec.argv)
            if account is not None:
                if spec.env:
                    # Root's part of the chain gets the base; the loader restores the rest.
                    argv = [*privdrop.loader(list(spec.env)), *argv]
                    env = privdrop.hidden_environment(base, spec.env)
                setpriv = privdrop.find_setpriv()
                if setpriv is None:
                    raise SpawnFailed("cannot run jobs as another user: setpriv (util-linux) "
                                      "not found")
                argv = [*privdrop.setpriv_args(setpriv, account), *argv]
                executable = argv[0]
            if self.job.isolation:
                isolator = self.isolator or Isolator()
                argv = isolator.wrap(self.job.isolation, self.job.id, argv, spec.cwd, program)
                executable = argv[0]
            if self.cgroup is not None and self.cgroup.procs_files:
                executable, argv = shim_command(self.cgroup.procs_files, executable, argv)
            child = spawn(argv, executable=executable, env=env, cwd=spec.cwd)
        except (SpawnFailed, OSError) as exc:
            message = str(exc) if isinstance(exc, SpawnFailed) else _spawn_error(spec.argv[0], exc)
            self.job.spawn_failed(message)
            self.output.close()
            self._remove_cgroup()
            self._on_change(self.job)
            self.done.set()
            return None
        self._child = child
        self.job.spawned(child.pid)
        self.job.process_key = procid.identity(child.pid, child.pidfd)
        self._on_change(self.job)
        return child

    async def supervise(self, child: Child) -> None:
        """Own the spawned process until it has ended and is recorded. Every way out, a
        cancellation included, kills what is left of the job and reaps it (shielded)."""
        try:
            await self._supervise(child)
        finally:
            with trio.CancelScope(shield=True):
                await self._reap(child)

    async def _supervise(self, child: Child) -> None:
        # Without a memory limit of its own, the group's OOM killer never fires: most jobs
        # need no watcher task.
        if self.cgroup is None or self.job.limits.memory is None:
            await self._run(child)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_oom, self.cgroup)
            await self._run(child)
            nursery.cancel_scope.cancel()  # the job has ended

    async def _run(self, child: Child) -> None:
        """Pump the output until the main process has exited and the pipes are drained."""
        async with trio.open_nursery() as pumps:
            for pipe, stream in ((child.stdout, Stream.STDOUT), (child.stderr, Stream.STDERR)):
                _grow_pipe(pipe)
                pumps.start_soon(self._pump, pipe, stream)
            await self._wait_or_kill(child)
            self._kill_tree(child)
            pumps.cancel_scope.deadline = trio.current_time() + DRAIN_TIMEOUT
        if pumps.cancel_scope.cancelled_caught:
            log.warning("job %s: output pipe held open after exit; not read", self.job.id)

    async def _wait_or_kill(self, child: Child) -> None:
        """Wait for the main process to exit; once a stop's grace period is over, kill the job
        (request_stop has sent SIGTERM and sets the deadline)."""
        with trio.CancelScope(deadline=self._grace_deadline) as grace:
            self._grace_scope = grace
            await child.wait()
        self._grace_scope = None
        if child.returncode is None:
            log.info("job %s: alive %.1fs after SIGTERM; sending SIGKILL", self.job.id,
                     trio.current_time() - self._stopped_at)
            self._kill_tree(child)
            await child.wait()

    def _kill_tree(self, child: Child) -> None:
        """SIGKILL whatever is left of the job: its cgroup if it has one, its process group."""
        if self.cgroup is not None:
            self.cgroup.kill()
        child.send_signal(signal.SIGKILL, group=True)

    async def _pump(self, pipe: trio.abc.ReceiveStream, stream: Stream) -> None:
        async with pipe:
            while data := await pipe.receive_some(MAX_FRAME_DATA):
                self.output.append(stream, data)
                self.job.output_bytes = self.output.data_bytes
                self.job.output_dropped_bytes = self.output.dropped_bytes
                if self.output.error and not self.job.output_error:
                    self.job.output_error = self.output.error

    async def _watch_oom(self, cgroup: JobCgroup) -> None:
        await cgroup.wait_oom()
        self._oom = True
        log.warning("job %s: the kernel's OOM killer fired; killing the job", self.job.id)
        # cgroup v1's OOM killer kills only the largest task: the rest goes with it.
        cgroup.kill()

    async def _reap(self, child: Child) -> None:
        """Runs shielded on every way out: the process is dead and recorded when it returns."""
        if child.returncode is None:  # cancelled from outside: the daemon is going away fast
            self._kill_tree(child)
            await child.wait()
            self._kill_tree(child)
        await child.aclose()  # both pipes and the pidfd; reaped already, so it does not wait
        oom = ""
        if self.cgroup is not None:
            with trio.move_on_after(EMPTY_TIMEOUT) as waited:
                await self.cgroup.wait_empty()
            if waited.cancelled_caught:
                log.error("job %s: processes left in cgroup after SIGKILL", self.job.id)
            self._remove_cgroup()
            # Kept by remove(): read once. Nothing is in use once the job has ended.
            usage = dataclasses.replace(self.cgroup.usage(), memory_current=None)
            self.job.usage = usage
            if self._oom or usage.oom_kills:
                limit = self.job.limits.memory
                oom = "out of memory" + (f" (limit {format_size(limit)})" if limit else "")
        assert child.returncode is not None
        self.job.exited(child.returncode, oom)
        self.job.output_dropped_bytes = self.output.dropped_bytes
        self.job.output_error = self.output.error or ""
        self.output.close()
        self._on_change(self.job)
        self.done.set()

    def _remove_cgroup(self) -> None:
        if self.cgroup is None:
            return
        try:
            self.cgroup.remove()
        except OSError as exc:
            log.error("job %s: cannot remove its cgroup: %s", self.job.id, exc)


def _spawn_error(argv0: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOEXEC:
        reason = NOT_EXECUTABLE
    return f"cannot execute {argv0!r}: {reason}"
