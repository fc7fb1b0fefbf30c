"""In-memory cgroups for unit tests of the supervisor and manager, without root.

A test drives the kernel's side by hand::

    backend = FakeBackend(tmp_path)        # procs_files are real, harmless files there
    ...job starts; the supervisor calls backend.create(...)
    group = backend.groups["job-1"]
    group.populate()                       # "a process is in it"
    group.trigger_oom()                    # wait_oom() returns, oom_kills == 1
    assert group.kills == 1                # the supervisor called kill(), which emptied it
"""

from __future__ import annotations

from pathlib import Path

import trio

from jobd.cgroups.base import (
    CONTROLLERS,
    CgroupBackend,
    JobCgroup,
    check_group_name,
    require_controllers,
)
from jobd.model.errors import FailedPrecondition
from jobd.model.resources import Ceiling, Limits, Usage


class FakeCgroup:
    def __init__(self, name: str, limits: Limits, procs_dir: Path | None, empty_on_kill: bool):
        self.name = name
        self.limits = limits
        self.procs_files: list[Path] = []
        if procs_dir is not None:
            procs_dir.mkdir(parents=True, exist_ok=True)
            procs = procs_dir / "cgroup.procs"
            procs.touch()
            self.procs_files.append(procs)
        self.kills = 0
        self.terminates = 0
        self.removed = False
        self.populated = False
        self.empty_on_kill = empty_on_kill
        self.cpu_seconds: float | None = 0.0
        self.memory_peak: int | None = 0
        self.oom_kills = 0
        self.pids_limit_hits = 0
        self._empty = trio.Event()
        self._empty.set()
        self._oom = trio.Event()

    def __repr__(self) -> str:
        return f"FakeCgroup({self.name!r}, kills={self.kills}, removed={self.removed})"

    # -- what the test does in the kernel's place

    def populate(self) -> None:
        """A process is in the group from now on, until set_empty() or kill()."""
        self.populated = True
        if self._empty.is_set():
            self._empty = trio.Event()

    def set_empty(self) -> None:
        self.populated = False
        self._empty.set()

    def trigger_oom(self) -> None:
        self.oom_kills += 1
        self._oom.set()

    # -- the JobCgroup interface

    def usage(self) -> Usage:
        return Usage(self.cpu_seconds, self.memory_peak, self.oom_kills, self.pids_limit_hits)

    def terminate(self) -> None:
        self.terminates += 1

    def kill(self) -> None:
        self.kills += 1
        if self.empty_on_kill:
            self.set_empty()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def wait_oom(self) -> None:
        await self._oom.wait()

    def remove(self) -> None:
        if self.populated:
            raise OSError(16, f"cgroup still has processes: fake {self.name}")
        self.removed = True


class FakeBackend:
    name = "fake"

    def __init__(
        self,
        procs_root: Path | None = None,
        controllers: frozenset[str] = CONTROLLERS,
        *,
        empty_on_kill: bool = True,
        populate_on_create: bool = False,
    ) -> None:
        """``procs_root``: where to make each group's cgroup.procs file, so a real spawn
        shim can write into it; None gives groups with no procs files at all."""
        self.procs_root = procs_root
        self.controllers = frozenset(controllers)
        self.empty_on_kill = empty_on_kill
        self.populate_on_create = populate_on_create
        self.groups: dict[str, FakeCgroup] = {}  # every group ever created, by name
        self.leftover_groups: list[FakeCgroup] = []
        self.fail_create: Exception | None = None  # raised by the next create() calls
        self.parent_removed = False
        self.jobs_ceiling = Ceiling()
        self.slice_ceiling = Ceiling()
        self.slice_of: dict[str, str] = {}  # job group name -> its slice

    def describe(self) -> str:
        return "cgroups: fake (in memory)\n  controllers: " + " ".join(sorted(self.controllers))

    def configure(self, jobs: Ceiling, each_slice: Ceiling) -> list[str]:
        self.jobs_ceiling, self.slice_ceiling = jobs, each_slice
        return []

    def create(self, name: str, limits: Limits, slice: str = "") -> FakeCgroup:
        check_group_name(name)
        reasons = dict.fromkeys(CONTROLLERS, "fake backend without it")
        require_controllers(limits, self.controllers, reasons)
        if self.fail_create is not None:
            raise self.fail_create
        if name in self.groups and not self.groups[name].removed:
            raise FailedPrecondition(f"cannot create cgroup {name!r}: exists")
        group = self._new(name, limits)
        if self.populate_on_create:
            group.populate()
        self.groups[name] = group
        self.slice_of[name] = slice
        return group

    def add_leftover(self, name: str, *, populated: bool = True) -> FakeCgroup:
        """A group as if left by a daemon that died, for crash-recovery tests."""
        group = self._new(name, Limits())
        if populated:
            group.populate()
        self.leftover_groups.append(group)
        return group

    def leftovers(self) -> list[FakeCgroup]:
        return [g for g in self.leftover_groups if not g.removed]

    def remove_parent(self) -> None:
        if not any(not g.removed for g in [*self.groups.values(), *self.leftover_groups]):
            self.parent_removed = True

    def _new(self, name: str, limits: Limits) -> FakeCgroup:
        procs_dir = None if self.procs_root is None else self.procs_root / name
        return FakeCgroup(name, limits, procs_dir, self.empty_on_kill)


def _conforms(backend: FakeBackend, group: FakeCgroup) -> tuple[CgroupBackend, JobCgroup]:
    return backend, group  # mypy checks the fake against the protocols here
