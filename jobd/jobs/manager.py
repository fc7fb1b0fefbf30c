"""The job manager: the one nursery every job runs in, live jobs, and their history.

Running jobs live in memory (their runners); every change of state is written to the store
at once, so finished jobs are read back from there. Authorization is not done here (see
``jobd.policy.auth``); every method trusts its caller.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from jobd.cgroups.base import CgroupBackend, identity_slice
from jobd.cgroups.none import NoneBackend
from jobd.cgroups.spare import SpareGroup
from jobd.jobs.diskuse import DiskUse
from jobd.jobs.output import Chunk, OutputLog, Stream, data_size, follow, is_frame_boundary
from jobd.jobs.retention import Retention, RetentionPolicy
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import Page, Store, kept_request_bytes
from jobd.jobs.supervisor import JobRunner
from jobd.launch import procid
from jobd.launch.isolator import Isolator
from jobd.launch.spawn import Child
from jobd.model import bounds
from jobd.model.errors import InvalidArgument, NotFound, ResourceExhausted, SpawnFailed, Unavailable
from jobd.model.job import SHUTDOWN, Job, JobSpec, Outcome
from jobd.policy.accounts import daemon_account
from jobd.policy.auth import Role
from jobd.policy.current import CurrentPolicy
from jobd.policy.quotas import StartRate, refusal

log = logging.getLogger(__name__)

MAX_GRACE = 24 * 3600.0
DEFAULT_PAGE = 1000
MAX_PAGE = 10000
LOST = "lost: jobd died while the job ran; its processes were killed on restart"
LEFTOVER_TIMEOUT = 10.0


def validate_spec(spec: JobSpec) -> None:
    """Reject what can never run, before any work is done."""
    bounds.check_command(spec.argv, spec.env, spec.cwd)
    if not spec.argv:
        raise InvalidArgument("argv is empty: give the program to run")
    if not spec.argv[0]:
        raise InvalidArgument("argv[0] is empty: give the program to run")
    for i, arg in enumerate(spec.argv):
        if "\0" in arg:
            raise InvalidArgument(f"argv[{i}] contains a NUL byte")
    for key, value in spec.env.items():
        if not bounds.ENV_NAME.match(key):
            raise InvalidArgument(
                f"environment variable name {key!r} is not valid: letters, digits and _, "
                "not starting with a digit"
            )
        if "\0" in value:
            raise InvalidArgument(f"environment variable {key} contains a NUL byte")
    if "\0" in spec.cwd:
        raise InvalidArgument("cwd contains a NUL byte")
    if not spec.cwd.startswith("/"):
        raise InvalidArgument(f"cwd {spec.cwd!r} must be an absolute path")


def validate_grace(grace: float | None) -> None:
    if grace is not None and not (math.isfinite(grace) and 0 <= grace <= MAX_GRACE):
        raise InvalidArgument(f"grace period must be between 0 and {MAX_GRACE:.0f} seconds")


async def _nothing() -> AsyncGenerator[list[Chunk], None]:
    return
    yield


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class _Running:
    """A running job: its runner, and what the store has been told of it. Waiters of its end
    wait on ``ended``, not on the runner, so that they hear of it once it is saved."""

    runner: JobRunner
    start_saved: bool = False
    ended: trio.Event = field(default_factory=trio.Event)


class JobManager:
    def __init__(
        self,
        state: StateDir,
        store: Store,
        default_grace: float = 10.0,
        output_cap: int | None = None,
        cgroups: CgroupBackend | None = None,
        policy: CurrentPolicy | None = None,
        retention: RetentionPolicy | None = None,
        isolation: Isolator | None = None,
    ) -> None:
        self.state = state
        # Limits, quotas and accounts: read once per decision from what is in force now.
        self.policy = policy or CurrentPolicy()
        # Only root can run a job as another account; otherwise every job runs as the daemon.
        self.switch_accounts = os.geteuid() == 0
        self.store = store
        self.default_grace = default_grace
        self.output_cap = output_cap
        self.cgroups: CgroupBackend = cgroups or NoneBackend("cgroups not configured")
        self.spares = SpareGroup(self.cgroups)
        self.isolation = isolation or Isolator()
        kept = retention or RetentionPolicy()
        # Output on disk by identity; every log's growth goes through it (jobd.jobs.diskuse).
        self.disk = DiskUse(state.output, lambda owner: self.policy.now.quotas.of(owner).output,
                            kept.min_free)  # fmt: skip
        self.retention = Retention(kept, store, state, self.disk)
        self._running: dict[str, _Running] = {}  # by job id, from its spawn to its end
        self._start_rate = StartRate()
        # Jobs counted against their owner's running quota, from admission until they end.
        self._counted: dict[str, str] = {}
        self._running_by: Counter[str] = Counter()
        self.finished_outcomes: Counter[str] = Counter()
        self._nursery: trio.Nursery | None = None
        self.closing = False
        # Set once the output sizes of jobs lost by a daemon that died are measured.
        self.lost_measured = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every job. Cancelling this kills whatever still runs (shielded, then reaped)."""
        await self.reap_leftover_cgroups()
        lost = self.recover()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._measure_lost, lost)
                nursery.start_soon(self.store.keep_flushing)
                nursery.start_soon(self.store.keep_checkpointing)
                await nursery.start(self.retention.run)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.spares.close()
            self.cgroups.remove_parent()

    async def reap_leftover_cgroups(self) -> None:
        """Job cgroups of a daemon that died: kill everything in them and remove them."""
        for group in self.cgroups.leftovers():
            group.kill()
            with trio.move_on_after(LEFTOVER_TIMEOUT):
                await group.wait_empty()
            try:
                group.remove()
            except OSError as exc:
                log.error("cannot remove leftover cgroup %s: %s", group.name, exc)
                continue
            log.warning("reaped cgroup %s, left by a jobd that died: killed anything in it "
                        "and removed it", group.name)

    def recover(self) -> list[str]:
        """Jobs recorded as live belong to a daemon that died: kill what is left, say so.
        Returns their ids, for :meth:`_measure_lost`."""
        lost = []
        for job in self.store.unfinished():
            killed = procid.kill_group_if_same(job.process_key)
            job.lost(LOST)
            self.store.save(job)
            lost.append(job.id)
            log.warning(
                "job %s was running when jobd died%s; marked lost",
                job.id,
                " (its process group was killed)" if killed else "",
                extra={"job": job.id, "identity": job.owner},
            )
        return lost

    async def _measure_lost(self, job_ids: list[str]) -> None:
        """What each lost job's log holds (the sizes saved while it ran lag behind). Walking a
        log is proportional to its frames (~0.37 s per million; a job writing a byte at a
        time makes a million a megabyte): on a worker thread, once the daemon serves."""
        for job_id in job_ids:
            try:
                # Abandoned on shutdown: the walk only reads, and must not hold the exit up.
                size = await trio.to_thread.run_sync(data_size, self.state.log_path(job_id),
                                                     abandon_on_cancel=True)
            except OSError:
                continue
            job = self.find(job_id)  # retention may have removed it meanwhile
            if job is not None and not job.output_deleted and job.output_bytes != size:
                job.output_bytes = size
                self.store.save(job)
        if job_ids:
            log.info("measured the output of %d job(s) lost by a jobd that died", len(job_ids))
        self.lost_measured.set()

    async def start(self, owner: str, spec: JobSpec, role: Role = Role.USER) -> Job:
        """Start a job and return it once its command runs, or raise SpawnFailed (the job is
        then recorded as failed to start, with the launcher's reason). Everything up to the
        spawn is synchronous, so no shutdown can begin between the check below and the job's
        registration; then it waits for the launcher's word (see JobRunner.supervise)."""
        validate_spec(spec)
        if self.closing or self._nursery is None:
            raise Unavailable("jobd is shutting down; no new jobs")
        policy = self.policy.now
        limits = policy.limits.effective(spec.limits, role, self.cgroups.controllers)
        isolation = self.isolation.effective(spec.isolation, role)
        account = policy.run_as.effective(owner, role, self.switch_accounts)
        slice = identity_slice(owner)
        rule = self.isolation.rule(role)
        job = Job(id=self.spares.next_id(limits, slice), owner=owner, spec=spec, limits=limits,
                  isolation=isolation, run_as=account.describe(),
                  syscall_filter=rule.syscalls.describe())
        # A large request is kept whole, once: its bytes count against the owner's disk
        # budget, or the start is refused before any work (quotas come after: a start refused
        # here is no start).
        kept = kept_request_bytes(job)
        if kept and (why := self.disk.take(owner, kept)):
            raise ResourceExhausted(why)
        try:
            self._admit(job)
        except BaseException:
            if kept:
                self.disk.released(owner, kept)
            raise
        try:
            output = OutputLog(self.state.log_path(job.id), self.output_cap, owner, self.disk)
        except BaseException:
            self._uncount(job.id)
            raise
        try:
            cgroup = self.spares.take(job.id, limits, slice)
        except BaseException:
            self._uncount(job.id)
            output.close()
            output.path.unlink()  # no job, no log
            raise
        runner = JobRunner(
            job, output, self.default_grace, cgroup, self.isolation,
            account, switch=account != daemon_account(), rule=rule,
        )
        running = _Running(runner)
        try:
            child = runner.spawn()
            # With its process, so that a restart can kill it; or as failed to start.
            self.store.save(job)
            if child is not None:
                self._running[job.id] = running
                self._nursery.start_soon(self._supervise, running, child)
        finally:
            if job.id not in self._running:  # it never ran
                self._uncount(job.id)
        if child is None:
            self._ended(job)
        if cgroup.procs_files and self.spares.after_start(limits, slice):
            self._nursery.start_soon(self.spares.fill)
        if child is not None:
            await runner.started.wait()
            self._record_start(running)
            if job.result is not None:
                await running.ended.wait()  # its launcher reported and exits: once reaped
        log.info(
            "job %s started by %s: %s (%s)",
            job.id,
            owner,
            bounds.summarize_argv(spec.argv, 256),  # the log need not copy a MiB per start
            job.result.message if job.result else f"pid {job.pid}",
            extra={"job": job.id, "identity": owner},
        )
        if job.result is not None:
            raise SpawnFailed(f"{job.result.message} (job {job.id} recorded as failed to start)")
        return job

    def _admit(self, job: Job) -> None:
        """The owner's running and start-rate quotas, before any work: count the job or
        refuse it. One identity's counts never touch another's."""
        owner, quota = job.owner, self.policy.now.quotas.of(job.owner)
        if self._running_by[owner] >= quota.running:
            raise ResourceExhausted(refusal(quota.running, "running jobs", owner))
        if not self._start_rate.allow(owner, quota.starts_per_minute):
            raise ResourceExhausted(refusal(quota.starts_per_minute, "job starts per minute",
                                            owner))
        self._counted[job.id] = owner
        self._running_by[owner] += 1

    def _uncount(self, job_id: str) -> None:
        """The job no longer counts as running (idempotent)."""
        owner = self._counted.pop(job_id, None)
        if owner is not None:
            self._running_by[owner] -= 1
            if not self._running_by[owner]:
                del self._running_by[owner]

    def running_count(self, owner: str) -> int:
        return self._running_by[owner]

    async def _supervise(self, running: _Running, child: Child) -> None:
        """One job's supervision, then what its end changes here: the supervisor knows nothing
        of the store, the quotas, the metrics or retention."""
        await running.runner.supervise(child)
        self._record_start(running)  # if the StartJob call was cancelled first
        self._ended(running.runner.job)
        running.ended.set()

    def _record_start(self, running: _Running) -> None:
        """Save the job as running (or stopping already), once, by whoever hears first that
        its launch is confirmed: StartJob, before it answers, or the supervising task."""
        if not running.start_saved:
            running.start_saved = True
            if not running.runner.job.finished:  # else its end is saved by _ended
                self.store.save(running.runner.job)

    def _request_stop(self, runner: JobRunner, by: str, grace: float | None) -> None:
        before = runner.job.state
        runner.request_stop(by, grace)
        if runner.job.state is not before:
            self.store.save(runner.job)  # stopping: a restart must not take it for running

    def _ended(self, job: Job) -> None:
        self.store.save(job)
        self._uncount(job.id)
        if job.result is not None:
            self.finished_outcomes[job.result.outcome.value] += 1
        # The runner of a job that ran is dropped as soon as the job is recorded finished:
        # from then on the job is read from the store.
        ran = self._running.pop(job.id, None) is not None
        # Before anyone hears that it ended, so that they see the pruning too.
        self.retention.check()
        failed = job.result is not None and job.result.outcome is Outcome.FAILED_TO_START
        if ran and not failed:  # one that failed to start was logged as such
            log.info("job %s ended: %s", job.id, job.result.message if job.result else "?",
                     extra={"job": job.id, "identity": job.owner})

    def _runner(self, job_id: str) -> JobRunner | None:
        running = self._running.get(job_id)
        return running.runner if running is not None else None

    def find(self, job_id: str) -> Job | None:
        runner = self._runner(job_id)
        return runner.job if runner is not None else self.store.get(job_id)

    def with_current_usage(self, job: Job) -> Job:
        """``job``, its resource usage read from its cgroup now if it runs (a few file reads:
        only for a status, not for every stop or stream)."""
        runner = self._runner(job.id)
        if runner is not None:
            runner.refresh_usage()
        return job

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def jobs(self, owner: str | None = None, limit: int = 0, token: str = "") -> Page:
        """A page of jobs, newest first."""
        if limit > MAX_PAGE:
            raise InvalidArgument(f"limit may be at most {MAX_PAGE}")
        try:
            page = await self.store.page(owner, limit or DEFAULT_PAGE, token)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        # Live jobs change faster than they are saved (output_bytes): show them as they are.
        live = [self._runner(j.id) for j in page.jobs]
        jobs = [r.job if r is not None else j for r, j in zip(live, page.jobs, strict=True)]
        return Page(jobs, page.next_token)

    async def stop(self, job: Job, by: str, grace: float | None = None) -> Job:
        """Stop ``job`` and wait until it has ended; an ended job is returned as it is."""
        validate_grace(grace)
        running = self._running.get(job.id)
        if running is not None:
            self._request_stop(running.runner, by, grace)
            await running.ended.wait()
            return running.runner.job
        return job

    async def wait_finished(self, job: Job) -> Job:
        """The job once it has ended."""
        running = self._running.get(job.id)
        if running is not None:
            await running.ended.wait()
            return running.runner.job
        return self.find(job.id) or job

    def output(
        self,
        job: Job,
        offset: int = 0,
        only: Stream | None = None,
        tail_lines: int = 0,
        no_follow: bool = False,
        room: Callable[[], Awaitable[int]] | None = None,
    ) -> AsyncGenerator[list[Chunk], None]:
        if offset and tail_lines:
            raise InvalidArgument("give an offset or a number of tail lines, not both")
        if job.output_deleted:  # the final status says so
            return _nothing()
        runner = self._runner(job.id)
        live = runner.output if runner is not None else None
        path = self.state.log_path(job.id)
        size = live.size if live is not None else _file_size(path)
        if offset > size:
            raise InvalidArgument(f"offset {offset} is past the end of the output ({size})")
        on_disk = live.written if live is not None else size
        if not (is_frame_boundary(path, offset) if offset <= on_disk
                else live is not None and live.is_pending_boundary(offset)):
            raise InvalidArgument(f"offset {offset} is not where a chunk starts: give 0 or a "
                                  "next_offset received before")
        return follow(path, live, offset, only=only, tail_lines=tail_lines, no_follow=no_follow,
                      room=room)

    def running(self) -> list[Job]:
        return [r.runner.job for r in self._running.values() if not r.runner.job.finished]

    async def shutdown(self, grace: float | None = None) -> None:
        """Refuse new jobs, stop every running one, and wait until all have ended."""
        self.closing = True
        running = list(self._running.values())
        if running:
            log.info("stopping %d running job(s)", len(running))
        for each in running:
            self._request_stop(each.runner, SHUTDOWN, grace)
        for each in running:
            await each.ended.wait()

    def kill_all_now(self) -> None:
        """Skip what is left of every grace period."""
        self.closing = True
        for running in list(self._running.values()):
            self._request_stop(running.runner, SHUTDOWN, 0)
