"""cgroup v2: one hierarchy, the controllers enabled top-down through cgroup.subtree_control."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path

import trio

from jobd.cgroups.base import CgroupBackend, JobCgroup, check_group_name, require_controllers
from jobd.cgroups.files import (
    describe_error,
    mkdir_error,
    read_keyed,
    read_pids,
    read_text,
    signal_members,
    write_value,
)
from jobd.cgroups.inotify import wait_until
from jobd.cgroups.mounts import Hierarchy
from jobd.cgroups.slices import (
    job_groups_in,
    remake,
    remove_empty,
    slices_in,
    write_v2_ceiling,
)
from jobd.cgroups.tree import kill_cgroup2, rmdir_tree, tree_procs, wait_unpopulated
from jobd.model.errors import FailedPrecondition
from jobd.model.resources import Ceiling, Limits, Usage

LIMIT_CONTROLLERS = ("cpu", "memory", "io", "pids")
# The leaf of its own group the daemon steps into where it starts alone in a delegated group.
DAEMON_GROUP = "daemon"
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel's floor


class V2Cgroup:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.procs_files = [path / "cgroup.procs"]
        self._final: Usage | None = None

    def __repr__(self) -> str:
        return f"V2Cgroup({self.path})"

    def usage(self) -> Usage:
        if self._final is not None:
            return self._final
        return v2_usage(self.path)

    def terminate(self) -> None:
        for procs in tree_procs(self.path):
            signal_members(procs, signal.SIGTERM)

    def kill(self) -> None:
        kill_cgroup2(self.path)

    async def wait_empty(self) -> None:
        await wait_unpopulated(self.path)

    async def wait_oom(self) -> None:
        await wait_oom_kill(self.path / "memory.events")

    def remove(self) -> None:
        if self._final is None and self.path.exists():
            self._final = v2_usage(self.path)  # so usage() still answers after removal
        rmdir_tree(self.path)


def v2_usage(path: Path) -> Usage:
    def keyed(file: str) -> dict[str, int]:
        try:
            return read_keyed(path / file)
        except FileNotFoundError:
            return {}

    usec = keyed("cpu.stat").get("usage_usec")
    try:
        peak: int | None = int(read_text(path / "memory.peak"))
    except FileNotFoundError:  # memory controller off, or a kernel before 5.19
        peak = None
    try:
        current: int | None = int(read_text(path / "memory.current"))
    except FileNotFoundError:
        current = None
    return Usage(
        cpu_seconds=None if usec is None else usec / 1e6,
        memory_peak=peak,
        oom_kills=keyed("memory.events").get("oom_kill", 0),
        pids_limit_hits=keyed("pids.events").get("max", 0),
        memory_current=current,
    )


async def wait_oom_kill(events: Path) -> None:
    def fired() -> bool:
        return read_keyed(events).get("oom_kill", 0) > 0

    try:
        await wait_until(events, fired)
    except FileNotFoundError:
        await trio.sleep_forever()  # no memory controller, or the group is gone: never fires


def write_limits(path: Path, limits: Limits) -> None:
    if limits.cpu is not None:
        quota = max(MIN_CPU_QUOTA_US, round(limits.cpu * CPU_PERIOD_US))
        write_value(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
    if limits.memory is not None:
        write_value(path / "memory.max", limits.memory)
        # Without this a job could page out to swap and never meet its limit.
        if (path / "memory.swap.max").exists():
            write_value(path / "memory.swap.max", 0)
        # Kill the whole job on OOM, as v1 jobd does by hand, never leave it half-alive.
        if (path / "memory.oom.group").exists():
            write_value(path / "memory.oom.group", 1)
    if limits.io_device is not None and (limits.io_read_bps or limits.io_write_bps):
        major, minor = limits.io_device
        parts = [f"{major}:{minor}"]
        if limits.io_read_bps is not None:
            parts.append(f"rbps={limits.io_read_bps}")
        if limits.io_write_bps is not None:
            parts.append(f"wbps={limits.io_write_bps}")
        write_value(path / "io.max", " ".join(parts))
    if limits.pids is not None:
        write_value(path / "pids.max", limits.pids)


class V2Backend:
    name = "v2"

    def __init__(
        self, parent_name: str, hierarchy: Hierarchy, notes: list[str], *,
        leave_own_group: bool = False,
    ) -> None:
        self.hierarchy = hierarchy
        self.parent = hierarchy.current / parent_name
        self.daemon_group = hierarchy.current
        self.notes = list(notes)
        self.reasons: dict[str, str] = {}
        self.error: str | None = None
        self.controllers: frozenset[str] = frozenset()
        self.slice_ceiling = Ceiling()
        self._slices: set[str] = set()  # made (or found) with the current slice ceiling
        try:
            os.makedirs(self.parent, exist_ok=True)
        except OSError as exc:
            self.error = mkdir_error(self.parent, exc)
            self.reasons = dict.fromkeys((*LIMIT_CONTROLLERS, "kill", "freeze"), self.error)
            return
        if leave_own_group and parent_name != DAEMON_GROUP:
            self._leave_own_group()
        enabled = self._enable_controllers()
        tree = set()
        if (self.parent / "cgroup.kill").exists() or (self.parent / "cgroup.freeze").exists():
            tree.add("kill")
        else:
            self.reasons["kill"] = "no cgroup.kill or cgroup.freeze (kernel before 5.2)"
        if (self.parent / "cgroup.freeze").exists():
            tree.add("freeze")
        else:
            self.reasons["freeze"] = "no cgroup.freeze (kernel before 5.2)"
        self.controllers = frozenset(enabled | tree)

    @property
    def unusable_reason(self) -> str | None:
        return self.error

    def _leave_own_group(self) -> None:
        """Step into a leaf of our own group when we are alone in it.

        A v2 group can hand controllers to its children only while it holds no process itself
        ("no internal processes"). Under systemd's Delegate=yes the daemon starts in the
        delegated group itself, so, as systemd's delegation documents ask of a service that
        manages its own subtree, it moves into a child first; the job groups are then its
        siblings. Other processes in the group cannot be moved on their behalf:
        _enable_controllers then says why the controllers are unavailable. The root group is
        exempt.
        """
        own = self.hierarchy.current
        if own == self.hierarchy.mount_point or read_pids(own / "cgroup.procs") != [os.getpid()]:
            return
        leaf = own / DAEMON_GROUP
        try:
            os.makedirs(leaf, exist_ok=True)
            write_value(leaf / "cgroup.procs", os.getpid())
        except OSError as exc:
            self.notes.append(f"could not move the daemon into {leaf}: {describe_error(exc)}")
            return
        self.daemon_group = leaf
        self.notes.append(f"the daemon moved into {leaf} so that {own} can hand controllers "
                          "down (cgroup v2's no-internal-processes rule)")

    def _enable_controllers(self) -> set[str]:
        """Make each limit controller reach our job groups: enabled in our own group's
        subtree_control (so the parent has it) and in the parent's (so jobs have it)."""
        own = self.hierarchy.current
        offered = set(read_text(own / "cgroup.controllers").split())
        for controller in LIMIT_CONTROLLERS:
            if controller not in offered:
                self.reasons[controller] = (
                    f"not delegated to {own} (absent from cgroup.controllers)"
                )
                continue
            try:
                write_value(own / "cgroup.subtree_control", f"+{controller}")
            except OSError as exc:
                self.reasons[controller] = _enable_error(own, exc)
        wanted = set(read_text(self.parent / "cgroup.controllers").split()) & set(LIMIT_CONTROLLERS)
        members = read_pids(self.parent / "cgroup.procs")
        if members and wanted:
            # "No internal processes": a group with members cannot hand controllers down.
            why = f"{self.parent} itself contains processes {members[:5]}; move them out"
            self.reasons.update(dict.fromkeys(wanted, why))
            return set()
        for controller in sorted(wanted):
            try:
                write_value(self.parent / "cgroup.subtree_control", f"+{controller}")
            except OSError as exc:
                self.reasons[controller] = _enable_error(self.parent, exc)
        return set(read_text(self.parent / "cgroup.subtree_control").split()) & wanted

    def describe(self) -> str:
        lines = [f"cgroups: v2 at {self.hierarchy.mount_point}"]
        lines.append(f"  daemon's group: {self.daemon_group}")
        lines.append(f"  parent group:   {self.parent}")
        if self.error:
            lines.append(f"  unusable: {self.error}")
        for controller in (*LIMIT_CONTROLLERS, "kill", "freeze"):
            state = (
                "available"
                if controller in self.controllers
                else ("unavailable: " + self.reasons.get(controller, "unknown"))
            )
            lines.append(f"  {controller:<7} {state}")
        lines.append("  wait_empty: event-driven (inotify on cgroup.events)")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def configure(self, jobs: Ceiling, each_slice: Ceiling) -> list[str]:
        if self.error is not None:
            return []
        problems = write_v2_ceiling(self.parent, jobs)
        self.slice_ceiling = each_slice
        self._slices = set()
        return problems + remake(slices_in(self.parent), self._make_slice)

    def _make_slice(self, name: str) -> list[str]:
        """The slice, handing down to its job groups what the parent hands down to it (a slice
        holds no process itself, so "no internal processes" allows it)."""
        check_group_name(name)
        path = self.parent / name
        os.makedirs(path, exist_ok=True)
        enabled = read_text(self.parent / "cgroup.subtree_control").split()
        for controller in enabled:
            write_value(path / "cgroup.subtree_control", f"+{controller}")
        self._slices.add(name)
        return write_v2_ceiling(path, self.slice_ceiling)

    def create(self, name: str, limits: Limits, slice: str = "") -> V2Cgroup:
        check_group_name(name)
        require_controllers(limits, self.controllers, self.reasons)
        path = self.parent / slice / name
        try:
            if slice and slice not in self._slices:
                self._make_slice(slice)
            os.mkdir(path)
        except OSError as exc:
            raise FailedPrecondition(f"cannot create cgroup {path}: {describe_error(exc)}") from exc
        try:
            write_limits(path, limits)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise FailedPrecondition(
                f"cannot set limits in cgroup {path}: {exc.filename}: {describe_error(exc)}"
            ) from exc
        return V2Cgroup(name, path)

    def leftovers(self) -> list[V2Cgroup]:
        if self.error is not None:
            return []
        return [V2Cgroup(name, path) for name, path in job_groups_in(self.parent)]

    def remove_parent(self) -> None:
        remove_empty(self.parent / name for name in slices_in(self.parent))
        self._slices = set()
        remove_empty([self.parent])


def _enable_error(group: Path, exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return (
            f"cannot enable it below {group}, which contains processes (cgroup v2 'no "
            "internal processes' rule): run jobd in a delegated group of its own, e.g. "
            "systemd Delegate=yes, or at the root"
        )
    return f"cannot enable it in {group / 'cgroup.subtree_control'}: {describe_error(exc)}"


def _conforms(backend: V2Backend, group: V2Cgroup) -> tuple[CgroupBackend, JobCgroup]:
    return backend, group  # mypy checks these against the protocols here
