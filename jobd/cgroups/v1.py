"""cgroup v1: one hierarchy per controller (or per group of controllers), plus the
controller-less cgroup2 "unified" hierarchy where mounted, for cgroup.kill and
cgroup.events."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import trio

from jobd.cgroups.base import CgroupBackend, JobCgroup, check_group_name, require_controllers
from jobd.cgroups.files import (
    describe_error,
    mkdir_error,
    read_int,
    read_keyed,
    read_pids,
    signal_members,
    write_value,
)
from jobd.cgroups.mounts import Hierarchy
from jobd.cgroups.slices import (
    job_groups_in,
    remake,
    remove_empty,
    slices_in,
    write_v1_ceiling,
    write_v1_memory,
)
from jobd.cgroups.tree import (
    freeze_and_kill,
    kill_cgroup2,
    kill_until_empty,
    rmdir_tree,
    tree_procs,
    wait_unpopulated,
)
from jobd.model.errors import FailedPrecondition
from jobd.model.resources import Ceiling, Limits, Usage

UNIFIED = "unified"
# v1 controller → the name the interface uses for what it enables.
OFFERS = {"cpu": "cpu", "memory": "memory", "blkio": "io", "pids": "pids", "freezer": "freeze"}
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000
# After the OOM notification the killer picks its victim a moment later; wait this long at
# most for the kill counter to show it, so the caller's own kill does not pre-empt it.
OOM_SETTLE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
# Without the unified hierarchy nothing announces an empty v1 group: poll, backing off.
EMPTY_POLL_FIRST, EMPTY_POLL_MAX = 0.01, 0.5


class V1Cgroup:
    """A job's directories, keyed by v1 controller name (one path may serve several, as
    with "cpu,cpuacct") and by ``"unified"``."""

    def __init__(self, name: str, dirs: dict[str, Path]) -> None:
        self.name = name
        self.dirs = dirs
        # Unified first: once the pid is there, cgroup.kill reaches it.
        ordered = sorted(dirs.items(), key=lambda item: item[0] != UNIFIED)
        self.procs_files = list(dict.fromkeys(path / "cgroup.procs" for _, path in ordered))
        self._final: Usage | None = None

    def __repr__(self) -> str:
        return f"V1Cgroup({self.name!r}, {sorted(self.dirs)})"

    def usage(self) -> Usage:
        if self._final is not None:
            return self._final
        return Usage(
            cpu_seconds=self._cpu_seconds(),
            memory_peak=self._read("memory", "memory.max_usage_in_bytes"),
            oom_kills=self._oom_kills(),
            pids_limit_hits=self._keyed("pids", "pids.events").get("max", 0),
            memory_current=self._read("memory", "memory.usage_in_bytes"),
        )

    def _read(self, controller: str, file: str) -> int | None:
        directory = self.dirs.get(controller)
        if directory is None:
            return None
        try:
            return read_int(directory / file)
        except FileNotFoundError:
            return None

    def _keyed(self, controller: str, file: str) -> dict[str, int]:
        directory = self.dirs.get(controller)
        try:
            return {} if directory is None else read_keyed(directory / file)
        except FileNotFoundError:
            return {}

    def _cpu_seconds(self) -> float | None:
        nanoseconds = self._read("cpuacct", "cpuacct.usage")
        if nanoseconds is not None:
            return nanoseconds / 1e9
        # The unified hierarchy keeps CPU time even without a cpu controller.
        usec = self._keyed(UNIFIED, "cpu.stat").get("usage_usec")
        return None if usec is None else usec / 1e6

    def _oom_kills(self) -> int:
        # failcnt stays 0 when the OOM killer fires; oom_kill counts the kills.
        return self._keyed("memory", "memory.oom_control").get("oom_kill", 0)

    def terminate(self) -> None:
        directory = self.dirs.get(UNIFIED) or next(iter(self.dirs.values()))
        for procs in tree_procs(directory):
            signal_members(procs, signal.SIGTERM)

    def kill(self) -> None:
        if UNIFIED in self.dirs:
            kill_cgroup2(self.dirs[UNIFIED])
        elif "freezer" in self.dirs:
            state = self.dirs["freezer"] / "freezer.state"
            freeze_and_kill(  # v1 freezing covers the job's own child groups too
                freeze=lambda: write_value(state, "FROZEN"),
                is_frozen=lambda: _freezer_state(state) == "FROZEN",
                thaw=lambda: write_value(state, "THAWED"),
                procs_files=tree_procs(self.dirs["freezer"]),
            )
        else:
            kill_until_empty([p for d in set(self.dirs.values()) for p in tree_procs(d)])

    def _populated(self) -> bool:
        return any(read_pids(procs) for procs in self.procs_files)

    async def wait_empty(self) -> None:
        if UNIFIED in self.dirs:
            await wait_unpopulated(self.dirs[UNIFIED])
            return
        delay = EMPTY_POLL_FIRST
        while self._populated():
            await trio.sleep(delay)
            delay = min(delay * 2, EMPTY_POLL_MAX)

    async def wait_oom(self) -> None:
        memory = self.dirs.get("memory")
        if memory is None:
            await trio.sleep_forever()
            return
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            _register_oom_eventfd(memory, efd)
            if self._oom_kills() > 0:
                return
            await trio.lowlevel.wait_readable(efd)
            if not memory.exists():
                await trio.sleep_forever()  # the kernel signals removal the same way
            for delay in OOM_SETTLE:
                if self._oom_kills() > 0:
                    break
                await trio.sleep(delay)
        finally:
            trio.lowlevel.notify_closing(efd)
            os.close(efd)  # also unregisters the event in the kernel

    def remove(self) -> None:
        if self._final is None and any(path.exists() for path in self.dirs.values()):
            self._final = self.usage()  # so usage() still answers after removal
        for path in dict.fromkeys(self.dirs.values()):
            rmdir_tree(path)


def _register_oom_eventfd(memory: Path, efd: int) -> None:
    """memory.oom_control notifications: write "<eventfd> <fd of oom_control>" to
    cgroup.event_control; the kernel keeps its own reference to both."""
    control = os.open(memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
    try:
        write_value(memory / "cgroup.event_control", f"{efd} {control}")
    finally:
        os.close(control)


def _freezer_state(state: Path) -> str:
    with open(state, encoding="ascii") as f:
        return f.read().strip()


def write_limits(dirs: dict[str, Path], limits: Limits) -> None:
    if limits.cpu is not None:
        quota = max(MIN_CPU_QUOTA_US, round(limits.cpu * CPU_PERIOD_US))
        write_value(dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
        write_value(dirs["cpu"] / "cpu.cfs_quota_us", quota)
    if limits.memory is not None:
        # memory+swap too: with swap accounting on, a job cannot page out past its limit.
        write_v1_memory(dirs["memory"], limits.memory)
    # A group inherits oom_kill_disable; with it set, an OOM job would hang, not die.
    if "memory" in dirs and read_keyed(dirs["memory"] / "memory.oom_control").get(
        "oom_kill_disable"
    ):
        write_value(dirs["memory"] / "memory.oom_control", 0)
    if limits.io_device is not None:
        major, minor = limits.io_device
        for file, bps in (
            ("blkio.throttle.read_bps_device", limits.io_read_bps),
            ("blkio.throttle.write_bps_device", limits.io_write_bps),
        ):
            if bps is not None:
                write_value(dirs["blkio"] / file, f"{major}:{minor} {bps}")
    if limits.pids is not None:
        write_value(dirs["pids"] / "pids.max", limits.pids)


class V1Backend:
    name = "v1"

    def __init__(
        self,
        parent_name: str,
        hierarchies: list[Hierarchy],
        unified: Hierarchy | None,
        notes: list[str],
    ) -> None:
        self.notes = list(notes)
        self.hierarchies = list(hierarchies)
        self.unified = unified
        self.parents: dict[str, Path] = {}  # controller (or "unified") → our parent group
        self.errors: dict[str, str] = {}  # hierarchy label → why it is unusable
        all_hierarchies = [*hierarchies, *([unified] if unified else [])]
        for hierarchy in all_hierarchies:
            parent = hierarchy.current / parent_name
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                self.errors[hierarchy.label] = mkdir_error(parent, exc)
                continue
            keys = [UNIFIED] if hierarchy.version == 2 else sorted(hierarchy.controllers)
            self.parents.update(dict.fromkeys(keys, parent))
        self.reasons = self._reasons()
        self.controllers = frozenset(
            {c for c in ("cpu", "memory", "io", "pids", "kill", "freeze") if c not in self.reasons}
        )
        self.slice_ceiling = Ceiling()
        self._slices: set[str] = set()  # made (or found) with the current slice ceiling

    @property
    def unusable_reason(self) -> str | None:
        """Why no hierarchy can be used at all, or None when at least one can."""
        if self.parents:
            return None
        return next(iter(self.errors.values()), "no usable hierarchy")

    def _reasons(self) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for controller, offer in OFFERS.items():
            if controller not in self.parents:
                label = next(
                    (h.label for h in self.hierarchies if controller in h.controllers), None
                )
                reasons[offer] = (
                    self.errors.get(label, "") if label else f"no v1 {controller} hierarchy mounted"
                )
        has_kill_file = UNIFIED in self.parents and (self.parents[UNIFIED] / "cgroup.kill").exists()
        if not has_kill_file and "freezer" not in self.parents:
            reasons["kill"] = "neither cgroup.kill (unified hierarchy) nor the freezer controller"
        return reasons

    def describe(self) -> str:
        unified = f", unified cgroup2 at {self.unified.mount_point}" if self.unified else ""
        lines = [f"cgroups: v1{unified}"]
        for hierarchy in [*self.hierarchies, *([self.unified] if self.unified else [])]:
            key = UNIFIED if hierarchy.version == 2 else min(hierarchy.controllers)
            where = self.parents.get(key)
            state = str(where) if where else f"unusable: {self.errors.get(hierarchy.label)}"
            lines.append(f"  {hierarchy.label:<12} {hierarchy.mount_point}  parent {state}")
        for controller in ("cpu", "memory", "io", "pids", "kill", "freeze"):
            state = (
                "available"
                if controller in self.controllers
                else ("unavailable: " + self.reasons.get(controller, "unknown"))
            )
            lines.append(f"  {controller:<7} {state}{self._how(controller)}")
        if "cpuacct" not in self.parents:
            source = "unified cpu.stat" if UNIFIED in self.parents else "nowhere"
            lines.append(f"  cpu time: no cpuacct hierarchy; read from {source}")
        events = (
            "event-driven (unified cgroup.events)"
            if UNIFIED in self.parents
            else (
                f"polling cgroup.procs every {EMPTY_POLL_FIRST}-{EMPTY_POLL_MAX}s "
                "(no unified hierarchy)"
            )
        )
        lines.append(f"  wait_empty: {events}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def _how(self, controller: str) -> str:
        if controller == "kill" and controller in self.controllers:
            has_kill = UNIFIED in self.parents and (self.parents[UNIFIED] / "cgroup.kill").exists()
            return " (cgroup.kill on the unified hierarchy)" if has_kill else " (freeze + SIGKILL)"
        if controller == "memory" and "memory" in self.parents:
            memsw = (self.parents["memory"] / "memory.memsw.limit_in_bytes").exists()
            return " (swap included)" if memsw else " (swap not accounted)"
        return ""

    def _unneeded(self, limits: Limits) -> set[str]:
        """Hierarchies a job with ``limits`` has no use for. Each one costs a mkdir and an
        rmdir here and a migration in the job's shim (v1 migrations are not cheap)."""
        unneeded = set()
        if limits.io_device is None:
            unneeded.add("blkio")  # only for limits: jobd reads no I/O usage from it
        if UNIFIED in self.parents:
            unneeded.add("cpuacct")  # the unified group's cpu.stat counts the CPU time too
            if (self.parents[UNIFIED] / "cgroup.kill").exists():
                unneeded.add("freezer")  # only for killing where there is no cgroup.kill
        return unneeded

    def configure(self, jobs: Ceiling, each_slice: Ceiling) -> list[str]:
        problems = write_v1_ceiling(self.parents, jobs)
        self.slice_ceiling = each_slice
        self._slices = set()
        names = {s for parent in set(self.parents.values()) for s in slices_in(parent)}
        return problems + remake(sorted(names), self._make_slice)

    def _make_slice(self, name: str) -> list[str]:
        """The slice in every hierarchy (job groups may go in any), with its ceiling."""
        check_group_name(name)
        for parent in dict.fromkeys(self.parents.values()):
            os.makedirs(parent / name, exist_ok=True)
        self._slices.add(name)
        return write_v1_ceiling({k: p / name for k, p in self.parents.items()},
                                self.slice_ceiling)  # fmt: skip

    def create(
        self, name: str, limits: Limits, slice: str = "", *, every_hierarchy: bool = False
    ) -> V1Cgroup:
        """The job's group in each hierarchy it needs (``every_hierarchy``: in all, for
        tests of the fallbacks); cpu, memory and pids always, for fair shares and the usage
        that status shows."""
        check_group_name(name)
        require_controllers(limits, self.controllers, self.reasons)
        unneeded = set() if every_hierarchy else self._unneeded(limits)
        # A hierarchy may hold several controllers (cpu,cpuacct): made if any of them is needed.
        wanted = {p for key, p in self.parents.items() if key not in unneeded}
        made: list[Path] = []  # only these are ours to undo: never a same-named leftover
        try:
            if slice and slice not in self._slices:
                self._make_slice(slice)  # a ceiling it cannot hold is the parent's to keep
            for parent in dict.fromkeys(p for p in self.parents.values() if p in wanted):
                os.mkdir(parent / slice / name)
                made.append(parent / slice / name)
            dirs = {key: parent / slice / name for key, parent in self.parents.items()
                    if parent in wanted}  # fmt: skip
            write_limits(dirs, limits)
        except OSError as exc:
            for path in made:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            where = exc.filename or "cgroup"
            raise FailedPrecondition(
                f"cannot set up cgroup {name!r}: {where}: {describe_error(exc)}"
            ) from exc
        return V1Cgroup(name, dirs)

    def leftovers(self) -> list[V1Cgroup]:
        found: dict[str, dict[str, Path]] = {}
        for key, parent in self.parents.items():
            for name, directory in job_groups_in(parent):
                found.setdefault(name, {})[key] = directory
        return [V1Cgroup(name, dirs) for name, dirs in sorted(found.items())]

    def remove_parent(self) -> None:
        parents = list(dict.fromkeys(self.parents.values()))
        remove_empty(p / name for p in parents for name in slices_in(p))
        self._slices = set()
        remove_empty(parents)


def _conforms(backend: V1Backend, group: V1Cgroup) -> tuple[CgroupBackend, JobCgroup]:
    return backend, group  # mypy checks these against the protocols here
