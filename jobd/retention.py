"""Retention: finished jobs older than ``max_age`` are forgotten, and the oldest finished
jobs' output is deleted while all stored output is above ``max_output``. Running jobs are
never touched; a job whose output was deleted keeps its record, which says so.

Pruning runs at start, hourly (for the age limit), and when a job's end takes stored output
over the limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

import trio

from jobd.statedir import StateDir
from jobd.store import Store
from jobd.units import format_size

log = logging.getLogger(__name__)

BATCH = 500
INTERVAL = 3600.0
DEFAULT_MAX_AGE = 30 * 86400.0
DEFAULT_MAX_OUTPUT = 10 << 30


@dataclass(frozen=True)
class RetentionPolicy:
    max_age: float | None = DEFAULT_MAX_AGE  # seconds; None keeps every job
    max_output: int | None = DEFAULT_MAX_OUTPUT  # bytes of stored output; None: no limit


class Retention:
    def __init__(self, policy: RetentionPolicy, store: Store, state: StateDir) -> None:
        self.policy = policy
        self.store = store
        self.state = state
        self.stored = 0  # bytes of output on disk, counted once at start and kept up to date

    def job_ended(self, log_size: int) -> None:
        self.stored += log_size
        if self.policy.max_output is not None and self.stored > self.policy.max_output:
            self.prune_output(self.policy.max_output)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # One stat per stored log: off the event loop, there may be 100,000 of them.
        self.stored = await trio.to_thread.run_sync(self._measure)
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

    def _measure(self) -> int:
        return sum(e.stat().st_size for e in os.scandir(self.state.output) if e.is_file())

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
        ids = self.store.finished_before(cutoff, BATCH)
        for job_id in ids:
            self._delete_log(job_id)
        if ids:
            self.store.delete(ids)
            log.info("retention: forgot %d job(s) that ended over %s ago", len(ids),
                     _age(self.policy.max_age))
        return len(ids)

    def prune_output(self, limit: int) -> None:
        deleted = 0
        seen: set[str] = set()
        while self.stored > limit:
            jobs = [j for j in self.store.oldest_with_output(BATCH) if j.id not in seen]
            if not jobs:  # (or the database is not taking our changes: try again later)
                log.warning("retention: running jobs alone hold %s of output, over %s",
                            format_size(self.stored), format_size(limit))
                break
            for job in jobs:
                if self.stored <= limit:
                    break
                seen.add(job.id)
                self._delete_log(job.id)
                job.output_deleted = True
                job.output_error = (
                    f"output deleted: stored output was above {format_size(limit)}"
                )
                self.store.save(job)
                deleted += 1
        if deleted:
            log.info("retention: deleted the output of %d oldest job(s)", deleted)

    def _delete_log(self, job_id: str) -> None:
        path = self.state.log_path(job_id)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            self.stored -= size


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "ever"
    days = seconds / 86400
    return f"{days:g} days" if days >= 1 else f"{seconds:g} s"
