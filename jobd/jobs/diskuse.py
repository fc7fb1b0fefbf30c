"""Output on disk: how much each identity's jobs hold, and what a job may still write.

Every job's log grows through :meth:`DiskUse.grant`, which allows what fits in the owner's
output budget (``[quotas] output``, per identity) and only while the state directory's disk
keeps its free reserve (``[retention] min_free``). At its budget, an identity's own oldest
finished output is deleted to make room (``reclaim``, retention's); what still does not fit
(its running jobs hold the budget) is dropped and counted, as the per-job cap's overflow is:
the job is never blocked, and its status says why. So no identity can fill the disk, and none
can make another's output be lost: retention, when all stored output is over its limit,
deletes only the oldest output of the identity that holds the most.
A large request (argv and env over 6 KiB, kept whole once: ``jobd.jobs.store``) counts against the
budget too, all or nothing: a start whose request does not fit is refused. Counts are bytes on
disk: data and the logs' framing (9 bytes per frame), requests as stored (JSON).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from jobd.model.units import format_size

DEFAULT_MIN_FREE = 1 << 30
# statvfs at most once per this many bytes granted: the reserve is checked often enough that a
# job cannot write much past it, never on every write.
CHECK_EVERY = 8 << 20


class DiskUse:
    def __init__(self, path: Path, budget: Callable[[str], int] = lambda owner: 1 << 62,
                 min_free: int = DEFAULT_MIN_FREE) -> None:
        self.path = path
        self.budget = budget
        self.min_free = min_free
        self.by_owner: Counter[str] = Counter()
        self.total = 0
        self._until_check = 0
        self._full = False
        # Called with (owner, bytes) when the owner's budget is short of them: frees its own
        # oldest finished output (jobd.jobs.retention), synchronously.
        self.reclaim: Callable[[str, int], None] | None = None

    def count(self, owner: str, size: int) -> None:
        """Output found on disk (at start), or written."""
        self.by_owner[owner] += size
        self.total += size

    def released(self, owner: str, size: int) -> None:
        """Output deleted (by retention)."""
        self.by_owner[owner] -= size
        self.total -= size
        if self.by_owner[owner] <= 0:
            del self.by_owner[owner]

    def grant(self, owner: str, size: int) -> tuple[int, str]:
        """How many of ``size`` bytes ``owner``'s job may write now, and, when not all, why."""
        room = self.budget(owner) - self.by_owner[owner]
        if room < size and self.reclaim is not None:
            self.reclaim(owner, size)
            room = self.budget(owner) - self.by_owner[owner]
        why = ""
        if room < size:
            why = (f"{owner}'s output budget of {format_size(self.budget(owner))} reached "
                   "([quotas] output); later output dropped")
        if self._disk_full(size):
            room, why = 0, (f"the state directory's disk has less than "
                            f"{format_size(self.min_free)} free; later output dropped")
        granted = max(0, min(size, room))
        self.count(owner, granted)
        return granted, why

    def take(self, owner: str, size: int) -> str:
        """All of ``size`` bytes for ``owner`` (a large request to keep), or why not: its
        budget, after its own oldest output has made what room it can, or the disk's
        reserve."""
        over = self.by_owner[owner] + size > self.budget(owner)
        if over and size <= self.budget(owner) and self.reclaim is not None:
            self.reclaim(owner, size)  # (never for a request that could not fit at all)
        if self.by_owner[owner] + size > self.budget(owner):
            return (f"{owner}'s disk budget of {format_size(self.budget(owner))} "
                    f"([quotas] output) would be passed: its jobs keep "
                    f"{format_size(self.by_owner[owner])} and this request is "
                    f"{format_size(size)}")
        if self._disk_full(size):
            return (f"the state directory's disk has less than {format_size(self.min_free)} "
                    "free")
        self.count(owner, size)
        return ""

    def _disk_full(self, size: int) -> bool:
        self._until_check -= size
        if self._until_check > 0:
            return self._full
        self._until_check = CHECK_EVERY
        try:
            st = os.statvfs(self.path)
        except OSError:
            return self._full
        self._full = st.f_bavail * st.f_frsize < self.min_free
        return self._full
