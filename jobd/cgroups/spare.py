"""One job cgroup made ahead of time, so that StartJob does not wait for its mkdirs.

Making a job's group costs a mkdir per hierarchy (and its limit writes), ~0.2 ms on a v1 host,
on StartJob's way to its answer. So after each start that took the spare (or found none), the
manager makes the next one in a task of its own, on the trio thread, with the latest start's
limits and in its identity's slice: the task runs once the start's reply is on its way, while
the client reads it and sends its next request. The next start whose limits and slice are the
same takes it; any other start makes its own group as before. Not on a worker thread: there
the mkdirs contended in the kernel with the starts' own group operations (a mkdir waiting 4 ms
for the cgroup lock held by a preempted thread); on the trio thread no two of the daemon's
group operations overlap.
The group's name carries the job id (``job-<id>``), and cgroup2 cannot rename a group, so the
id of that next job is chosen with the group: ``next_id`` hands it out. A spare never holds a
process: one left by a daemon that died is an empty leftover group, removed at the next start
like any other.
"""

from __future__ import annotations

import logging
import uuid

import trio

from jobd.cgroups.base import CgroupBackend, JobCgroup
from jobd.model.resources import Limits

log = logging.getLogger(__name__)


class SpareGroup:
    def __init__(self, backend: CgroupBackend) -> None:
        self._backend = backend
        self._spare: tuple[str, tuple[Limits, str], JobCgroup] | None = None
        self._filling = False
        self._closed = False
        self._wanted: tuple[Limits, str] = (Limits(), "")
        self._idle = trio.Event()
        self._idle.set()

    def next_id(self, limits: Limits, slice: str = "") -> str:
        """The id for a job with ``limits`` in ``slice``: the spare's, if it fits, else a new
        one."""
        if self._spare is not None and self._spare[1] == (limits, slice):
            return self._spare[0]
        return str(uuid.uuid4())

    def take(self, job_id: str, limits: Limits, slice: str = "") -> JobCgroup:
        """The group of job ``job_id``: the spare made for it, or a new one."""
        spare = self._spare
        if spare is not None and spare[0] == job_id and spare[1] == (limits, slice):
            self._spare = None
            return spare[2]
        return self._backend.create(f"job-{job_id}", limits, slice)

    def after_start(self, limits: Limits, slice: str = "") -> bool:
        """Note a start with ``limits`` in ``slice``: the next spare gets the latest start's.
        True when the caller is to run :meth:`fill` (there is no spare and none on the way;
        from now on one is). Synchronous, so that a start costs no task unless a spare is to
        be made."""
        self._wanted = (limits, slice)
        if self._spare is not None or self._filling or self._closed:
            return False
        self._filling, self._idle = True, trio.Event()
        return True

    async def fill(self) -> None:
        """Make the spare, after :meth:`after_start` said to."""
        try:
            # Let the start that asked for it answer first.
            await trio.lowlevel.checkpoint()
            if self._closed:
                return
            wanted, job_id = self._wanted, str(uuid.uuid4())
            try:
                group = self._backend.create(f"job-{job_id}", *wanted)
            except Exception as exc:  # the next start makes its own group, and reports it
                log.debug("no spare cgroup: %s", exc)
                return
        finally:
            self._filling = False
            self._idle.set()
        if self._closed or not group.procs_files:
            _remove(group)
            return
        self._spare = (job_id, wanted, group)

    async def wait_idle(self) -> None:
        """Until no spare is being made."""
        await self._idle.wait()

    def close(self) -> None:
        """Remove the spare; none is made after this."""
        self._closed = True
        spare, self._spare = self._spare, None
        if spare is not None:
            _remove(spare[2])


def _remove(group: JobCgroup) -> None:
    try:
        group.remove()
    except OSError as exc:
        log.error("cannot remove the spare cgroup %s: %s", group.name, exc)
