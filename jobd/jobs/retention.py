"""Retention: finished jobs older than ``max_age`` are forgotten, and while all that is stored
(running jobs' output included, counted as it is written, and large requests: ``jobd.jobs.diskuse``)
is above ``max_output``, the oldest finished jobs' output is deleted, always of the identity
that holds the most, so that no identity's output can push out another's; and when an
identity's jobs would write past its output budget, its own oldest finished output goes first.
Running jobs are never touched; a job whose output was deleted keeps its record, which says so.

Pruning runs at start, hourly, and when a job ends with stored output over the limit. What
running jobs write in between is bounded by each identity's output budget (``jobd.jobs.diskuse``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

import trio

from jobd.jobs.diskuse import DEFAULT_MIN_FREE, DiskUse
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import Store
from jobd.model.job import Job
from jobd.model.units import format_size

log = logging.getLogger(__name__)

BATCH = 500
INTERVAL = 3600.0
DEFAULT_MAX_AGE = 30 * 86400.0
DEFAULT_MAX_OUTPUT = 10 << 30


@dataclass(frozen=True)
class RetentionPolicy:
    max_age: float | None = DEFAULT_MAX_AGE  # seconds; None keeps every job
    max_output: int | None = DEFAULT_MAX_OUTPUT  # bytes of stored output; None: no limit
    min_free: int = DEFAULT_MIN_FREE  # bytes the state directory's disk keeps free


class Retention:
    def __init__(self, policy: RetentionPolicy, store: Store, state: StateDir,
                 use: DiskUse | None = None) -> None:
        self.policy = policy
        self.store = store
        self.state = state
        # Output on disk by identity: counted once at start, then as logs grow and go.
        self.use = use or DiskUse(state.output)
        self.use.reclaim = self.reclaim
        self._waiting_for: str | None = None  # said once: whose running output holds us over

    @property
    def stored(self) -> int:
        return self.use.total

    def check(self) -> None:
        """When a job ends: its output was counted as it was written."""
        if self.policy.max_output is not None and self.stored > self.policy.max_output:
            self.prune_output(self.policy.max_output)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # One stat per stored log: off the event loop, there may be 100,000 of them.
        for owner, size in (await trio.to_thread.run_sync(self._measure)).items():
            self.use.count(owner, size)
        task_status.started()
        while True:
            if self.policy.max_age is not None:
                cutoff = time.time() - self.policy.max_age
                # Let calls be served between batches of a large first prune.
                while self._forget_batch(cutoff):
                    await trio.lowlevel.checkpoint()
            if self.policy.max_output is not None:
                self.prune_output(self.policy.max_output)
            await trio.sleep(INTERVAL)  # the age limit moves on with the clock alone

    def _measure(self) -> dict[str, int]:
        """Stored output and kept large requests by owner (a log no record names counts as
        nobody's: "")."""
        owners = self.store.owners()
        found = self.store.kept_requests_by_owner()
        for entry in os.scandir(self.state.output):
            if entry.is_file():
                owner = owners.get(entry.name.removesuffix(".log"), "")
                found[owner] = found.get(owner, 0) + entry.stat().st_size
        return found

    def prune(self, now: float | None = None) -> None:
        if self.policy.max_age is not None:
            self.prune_age((now or time.time()) - self.policy.max_age)
        if self.policy.max_output is not None:
            self.prune_output(self.policy.max_output)

    def prune_age(self, cutoff: float) -> None:
        while self._forget_batch(cutoff):
            pass

    def _forget_batch(self, cutoff: float) -> int:
        """Forget up to one batch of jobs that ended before ``cutoff``; how many."""
        found = self.store.finished_before(cutoff, BATCH)
        for job_id, owner, request_bytes in found:
            self._delete_log(job_id, owner)
            if request_bytes:  # its large request goes with its record
                self.use.released(owner, request_bytes)
        ids = [job_id for job_id, _, _ in found]
        if ids:
            self.store.delete(ids)
            log.info("retention: forgot %d job(s) that ended over %s ago", len(ids),
                     _age(self.policy.max_age))
        return len(ids)

    def prune_output(self, limit: int) -> None:
        """Delete finished output, oldest first, of the identity that holds the most, until
        stored output is under ``limit``. Only ever the biggest holder's: an identity loses
        output only while none holds more, so no flood can push out another's history. When
        the biggest holder's output is all running, nothing is deleted until its jobs end (its
        budget bounds how far over the limit that goes)."""
        deleted = 0
        seen: set[str] = set()
        while self.stored > limit:
            # Logs that no record names (owner "": left by a crash before their job was saved)
            # are no identity's, and never make one lose output.
            holders = [(n, o) for o, n in self.use.by_owner.items() if o]
            if not holders:
                break
            held, owner = max(holders)
            jobs = [j for j in self.store.oldest_with_output(owner, BATCH) if j.id not in seen]
            if not jobs:  # (or the database is not taking our changes: try again later)
                if self._waiting_for != owner:
                    log.warning("retention: stored output is %s, over %s, and %s, who holds the "
                                "most (%s), has only running jobs' output; waiting for them",
                                format_size(self.stored), format_size(limit), owner,
                                format_size(held))
                self._waiting_for = owner
                break
            self._waiting_for = None
            next_most = max((n for n, o in holders if o != owner), default=-1)
            for job in jobs:
                if self.stored <= limit or self.use.by_owner[owner] < next_most:
                    break  # under the limit, or another holds more now: its turn
                seen.add(job.id)
                self._delete_output(job, f"stored output was above {format_size(limit)}")
                deleted += 1
        if deleted:
            log.info("retention: deleted the output of %d oldest job(s)", deleted)

    def reclaim(self, owner: str, need: int) -> None:
        """``owner``'s jobs are about to write past its output budget: delete its own oldest
        finished output first, down to a sixteenth of the budget below what ``need`` leaves
        (so that this runs once per that much output, not on every write). Only what its
        running jobs hold is left to be dropped."""
        budget = self.use.budget(owner)
        target = max(0, budget - need - budget // 16)
        deleted = 0
        seen: set[str] = set()
        while self.use.by_owner[owner] > target:
            jobs = [j for j in self.store.oldest_with_output(owner, BATCH) if j.id not in seen]
            if not jobs:
                break
            for job in jobs:
                if self.use.by_owner[owner] <= target:
                    break
                seen.add(job.id)
                self._delete_output(job, f"{owner}'s output budget of {format_size(budget)} "
                                         "was reached")
                deleted += 1
        if deleted:
            log.info("retention: deleted the output of %s's %d oldest job(s): its output "
                     "budget of %s was reached", owner, deleted, format_size(budget))

    def _delete_output(self, job: Job, why: str) -> None:
        self._delete_log(job.id, job.owner)
        job.output_deleted = True
        job.output_error = f"output deleted: {why}"
        self.store.save(job)

    def _delete_log(self, job_id: str, owner: str) -> None:
        path = self.state.log_path(job_id)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            self.use.released(owner, size)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "ever"
    days = seconds / 86400
    return f"{days:g} days" if days >= 1 else f"{seconds:g} s"
