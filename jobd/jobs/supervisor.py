"""One job's life: spawn its process, pump its output into its broadcast, enforce stop, record exit.

A job starts as the compiled launcher (``jobd.launch``), spawned on the trio thread through
vfork and waited for through a pidfd (``jobd.launch.spawn``). The launcher joins the job's cgroups,
makes its namespaces and mounts, drops to its account, changes into its working directory and
execs its command, in that order, inside the job; whatever fails on the way is written to a
status pipe, which closes without a word once the command runs. The job is running from then
on (or failed to start, with the launcher's reason). The daemon never looks at a path a client
chose. When the main process exits, what is left of the job (its cgroup, or at least its
process group) is killed, as systemd does for a service.

The runner changes its ``Job`` and says nothing up the stack: the manager saves the job when
``spawn`` returns, once ``started`` is set, after a stop request and once ``supervise`` (which
it awaits) returns, and does the end-of-job bookkeeping itself.

Where the launcher was not built, a job that needs neither namespaces nor another account
starts through a ``/bin/sh`` stand-in that joins its cgroups (see ``jobd.launch.plan``).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import signal
from collections.abc import Mapping

import trio

from jobd.cgroups.base import JobCgroup
from jobd.jobs import pipes
from jobd.jobs.broadcast import Broadcast
from jobd.jobs.output import OutputLog, Stream
from jobd.launch import binary, procid
from jobd.launch.isolator import Isolator
from jobd.launch.plan import Plan, build_chain
from jobd.launch.seccomp import SeccompError
from jobd.launch.spawn import Child, read_report, spawn
from jobd.launch.status import MAX_REPORT, NOT_EXECUTABLE, failure_message, parse
from jobd.launch.system import SYSTEM_PATH
from jobd.model.errors import SpawnFailed
from jobd.model.job import Job, State
from jobd.model.namespaces import Namespace
from jobd.model.units import format_size
from jobd.policy.accounts import Account
from jobd.policy.isolation import RoleIsolation

log = logging.getLogger(__name__)

# After the main process exits and its group is killed, a process that escaped the group
# (setsid) may still hold a pipe open; stop reading after this long rather than never end.
DRAIN_TIMEOUT = 2.0
# A stuck cgroup (a task in uninterruptible sleep) must not hang the daemon's shutdown.
EMPTY_TIMEOUT = 10.0
# A launch that has neither exec'd nor failed by then (a working directory on a hung network
# file system) is taken as running: StartJob answers, and the job can be stopped.
LAUNCH_TIMEOUT = 10.0


def job_environment(
    job_id: str, requested: Mapping[str, str], account: Account | None = None
) -> dict[str, str]:
    """The documented minimal environment, then whatever the request sets."""
    env = {"PATH": SYSTEM_PATH, "HOME": "/", "LANG": "C.UTF-8", "JOBD_JOB_ID": job_id}
    if account is not None:
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    env.update(requested)
    return env


def _as(account: Account | None) -> str:
    return f" (as {account.name})" if account else ""


class JobRunner:
    """Owns one job's process, cgroup and output while it runs. Created and run by the manager."""

    def __init__(
        self,
        job: Job,
        output: OutputLog,
        default_grace: float,
        cgroup: JobCgroup | None = None,
        isolator: Isolator | None = None,
        account: Account | None = None,
        switch: bool = False,
        rule: RoleIsolation | None = None,
    ) -> None:
        self.job = job
        # The account the job runs as (its HOME, USER), and whether that means switching
        # from the daemon's own (else the launcher keeps the daemon's).
        self.account = account
        self.switch = switch and account is not None
        self.output = Broadcast(output)
        self.cgroup = cgroup
        self.isolator = isolator or Isolator()
        # The role's containment: read-only file system, writable paths, OOM score.
        self.rule = rule or RoleIsolation()
        # Set once the job runs or has failed to start: what StartJob waits for.
        self.started = trio.Event()
        self.done = trio.Event()
        self._default_grace = default_grace
        self._child: Child | None = None
        self._has_init = False
        # A stop asked for before the launch was confirmed: applied once it is.
        self._pending_stop: tuple[str, float] | None = None
        # When a stop's grace period ends (trio time), and the scope its wait for the exit
        # runs in: a stop needs no task of its own (see request_stop and _wait_or_kill).
        self._grace_deadline = math.inf
        self._grace_scope: trio.CancelScope | None = None
        self._stopped_at = 0.0  # trio time of the first stop request
        self._oom = False

    def request_stop(self, by: str, grace: float | None = None) -> None:
        """Ask the job to stop: SIGTERM now, SIGKILL after ``grace`` seconds.

        A second request can only shorten the grace period that is running. A job still
        starting is stopped as soon as it runs.
        """
        grace = self._default_grace if grace is None else grace
        if self.job.state is State.STARTING:
            if self._pending_stop is None or grace < self._pending_stop[1]:
                self._pending_stop = (by, grace)
            return
        if self.job.state is State.RUNNING:
            self.job.stop(by)
            self._stopped_at = trio.current_time()
            if self._child is not None and self._child.returncode is None:
                self._terminate(self._child)
        elif self.job.state is not State.STOPPING:
            return
        self._grace_deadline = min(self._grace_deadline, trio.current_time() + grace)
        if self._grace_scope is not None:
            self._grace_scope.deadline = self._grace_deadline

    def _terminate(self, child: Child) -> None:
        """The polite first step of a stop. Under the launcher's init, SIGTERM goes to the
        launcher alone, which passes it to the init, which passes it to the command's process
        group: each gets it once, and a command without a handler dies of it, as PID 1 would
        not. Otherwise to the process group, and to all of the cgroup (descendants that left
        the group)."""
        if self._has_init:
            child.send_signal(signal.SIGTERM)
            return
        child.send_signal(signal.SIGTERM, group=True)
        if self.cgroup is not None:
            self.cgroup.terminate()

    def refresh_usage(self) -> None:
        if self.cgroup is not None and not self.job.finished:
            self.job.usage = self.cgroup.usage()

    def plan(self, env: Mapping[str, str], account: Account | None) -> Plan:
        """What the job's launcher is to do (pure: see jobd.launch.plan)."""
        namespaces = self.job.isolation
        mount = Namespace.MOUNT in namespaces
        procs = self.cgroup.procs_files if self.cgroup is not None else []
        return Plan(
            procs_files=tuple(str(p) for p in procs),
            oom_score_adj=self.rule.oom_score_adj if os.geteuid() == 0 else None,
            namespaces=namespaces,
            hostname=hostname_for(self.job.id),
            read_only=mount and self.rule.read_only,
            writable=self.rule.writable if mount else (),
            private_dirs=self.isolator.private_dirs if mount else (),
            tmpfs_size=self.job.limits.memory,
            account=account,
            cwd=self.job.spec.cwd,
            search_path=env.get("PATH", ""),
            filter_fd=self._filter_fd(Namespace.PID in namespaces),
        )

    def _filter_fd(self, pid_namespace: bool) -> int | None:
        try:
            return self.isolator.filter_fd(self.rule.syscalls, pid_namespace)
        except SeccompError as exc:
            raise SpawnFailed(f"cannot build the job's syscall filter: {exc}") from None

    def spawn(self) -> Child | None:
        """Start the job's launcher; or record the job as failed to start (then it is done)
        and return None. Nothing here waits: :meth:`supervise` confirms the launch."""
        spec = self.job.spec
        env = job_environment(self.job.id, spec.env, self.account)
        account = self.account if self.switch else None
        try:
            plan = self.plan(env, account)
            launcher = binary.compiled()
            status = os.pipe2(os.O_CLOEXEC) if launcher is not None else None
            chain = build_chain(plan, spec.argv, env, launcher, status[1] if status else -1,
                                binary.NOT_BUILT)  # fmt: skip
            child = spawn(list(chain.argv), executable=chain.executable, env=chain.env,
                          cwd=chain.cwd, status_pipe=status, keep_fds=chain.keep_fds)
        except (SpawnFailed, OSError) as exc:
            if isinstance(exc, SpawnFailed):
                message = str(exc)
            else:
                message = _spawn_error(spec.argv[0], spec.cwd, exc)
            self.job.spawn_failed(message)
            self.output.close_input()
            self._remove_cgroup()
            self.started.set()
            self.done.set()
            return None
        self._child = child
        self._has_init = plan.has_init and child.status is not None
        self.job.pid = child.pid
        self.job.process_key = procid.identity(child.pid, child.pidfd)
        if child.status is None:  # no launcher to hear from: it runs
            self._running(child)
        return child

    def _running(self, child: Child) -> None:
        self.job.spawned(child.pid)
        self.started.set()
        if self._pending_stop is not None:
            self.request_stop(*self._pending_stop)

    async def _confirm(self, child: Child, status: trio.lowlevel.FdStream) -> bool:
        """Wait for the launcher's word: True once the command runs, False when the launch
        failed (the job is then recorded as failed to start)."""
        report = b""
        with trio.move_on_after(LAUNCH_TIMEOUT) as waited:
            report = await read_report(status, MAX_REPORT)
        if waited.cancelled_caught:
            log.warning("job %s: its launcher has not exec'd the command after %g s; taken as "
                        "running", self.job.id, LAUNCH_TIMEOUT)
        if report:
            spec = self.job.spec
            who = _as(self.account) if self.switch else ""
            private = self.isolator.private_dirs if Namespace.MOUNT in self.job.isolation else ()
            self.job.spawn_failed(failure_message(parse(report), spec.argv[0], spec.cwd, who,
                                                  private))
            self.started.set()
            return False
        self._running(child)
        return True

    async def supervise(self, child: Child) -> None:
        """Own the spawned process until it has ended and is recorded. Every way out, a
        cancellation included, kills what is left of the job and reaps it (shielded)."""
        async with trio.open_nursery() as writer:  # the log writer: shielded, see run()
            await writer.start(self.output.run)
            try:
                if child.status is not None and not await self._confirm(child, child.status):
                    return
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
                pipes.grow(pipe)
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
            while data := await pipes.receive(pipe):  # cut into frames by send
                await self.output.send(stream, data)
                self._record_output()

    def _record_output(self) -> None:
        """The log's counts in the job's record: while it runs, and once all is on disk."""
        log = self.output.log
        self.job.output_bytes = log.data_bytes
        self.job.output_dropped_bytes = log.dropped_bytes
        self.job.output_error = log.error or ""

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
        if self.job.state is State.STARTING:  # cancelled before the launcher's word
            self.job.spawn_failed("the launch was cancelled: jobd is shutting down")
        elif not self.job.finished:  # else it failed to start, and is recorded so
            self.job.exited(child.returncode, oom)
        self.started.set()  # a launch cancelled before its word
        self.output.close_input()
        await self.output.wait_closed()  # every byte the pumps read is on disk
        self._record_output()
        self.done.set()

    def _remove_cgroup(self) -> None:
        if self.cgroup is None:
            return
        try:
            self.cgroup.remove()
        except OSError as exc:
            log.error("job %s: cannot remove its cgroup: %s", self.job.id, exc)


def hostname_for(job_id: str) -> str:
    return f"job-{job_id[:8]}"


def _spawn_error(argv0: str, cwd: str, exc: OSError) -> str:
    """Without the launcher: what Popen raised, for the working directory or the program."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOEXEC:
        reason = NOT_EXECUTABLE
    if exc.filename == cwd and exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOTDIR):
        return f"working directory {cwd!r}: {reason.lower()}"
    return f"cannot execute {argv0!r}: {reason}"
