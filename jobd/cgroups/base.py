"""The cgroup interface every backend implements, and the data types it speaks.

A *backend* (v2, v1, fake, none) is chosen once by :func:`jobd.cgroups.detect`. It owns one
parent group per hierarchy, holding all jobs, and under it one *slice* per identity, holding
that identity's jobs, like systemd's user slices: ``jobd/<slice>/job-<id>``. The parent and
every slice carry a :class:`Ceiling` (memory and tasks), so that all jobs together leave the
host its reserve and no identity's jobs together take more than their share, whatever each
job's own limits say. The supervisor only ever talks to these protocols, so the fake backend
can stand in for the kernel in tests.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from jobd.model.errors import FailedPrecondition

# What a backend may offer; "kill" means a whole-tree kill that no process can escape.
CONTROLLERS = frozenset({"cpu", "memory", "io", "pids", "kill", "freeze"})

# Which controller each limit needs, in the order messages name them.
LIMIT_CONTROLLER = {
    "cpu": "cpu",
    "memory": "memory",
    "io_read_bps": "io",
    "io_write_bps": "io",
    "pids": "pids",
}


@dataclass(frozen=True)
class Limits:
    """Per-job limits; ``None`` leaves that resource unlimited."""

    cpu: float | None = None  # fraction of cores: 0.5 is half a core, 2.0 two cores
    memory: int | None = None  # bytes, swap included where the kernel lets us say so
    io_read_bps: int | None = None  # bytes per second on io_device
    io_write_bps: int | None = None
    io_device: tuple[int, int] | None = None  # (major, minor) of a whole disk
    pids: int | None = None  # maximum number of tasks (threads count)

    def __post_init__(self) -> None:
        if self.cpu is not None and not (math.isfinite(self.cpu) and self.cpu > 0):
            raise ValueError(f"cpu limit must be a positive number of cores, not {self.cpu!r}")
        for name in ("memory", "io_read_bps", "io_write_bps", "pids"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} limit must be a positive integer, not {value!r}")
        has_bps = self.io_read_bps is not None or self.io_write_bps is not None
        # A bandwidth without a device would silently limit nothing.
        if has_bps and self.io_device is None:
            raise ValueError("an io bandwidth limit needs io_device (major, minor)")

    def requested(self) -> list[str]:
        """Names of the limits that are set, in field order."""
        return [
            f.name
            for f in fields(self)
            if f.name in LIMIT_CONTROLLER and getattr(self, f.name) is not None
        ]

    def controllers(self) -> list[str]:
        """The controllers these limits need, each once, in a stable order."""
        return list(dict.fromkeys(LIMIT_CONTROLLER[name] for name in self.requested()))


@dataclass(frozen=True)
class Ceiling:
    """What a group of jobs may use together; ``None`` leaves it to the group above."""

    memory: int | None = None  # bytes, page cache and tmpfs included
    pids: int | None = None  # tasks
    # The group's CPU weight against its siblings, on cgroup v2's scale (None: the kernel's
    # default, 100); v1's cpu.shares is this times 10.24.
    cpu_weight: int | None = None

    def describe(self) -> str:
        from jobd.model.units import format_size

        memory = "no limit" if self.memory is None else format_size(self.memory)
        tasks = "no limit" if self.pids is None else f"{self.pids} tasks"
        weight = "" if self.cpu_weight is None else f", CPU weight {self.cpu_weight}"
        return f"memory {memory}, {tasks}{weight}"


# cgroup v2's cpu.weight: 1-10000, 100 by default; v1's cpu.shares: 2-262144, 1024.
CPU_WEIGHT_MAX = 10_000
CPU_WEIGHT_DEFAULT = 100
V1_SHARES_DEFAULT = 1024


def v1_shares(weight: int | None) -> int:
    if weight is None:
        return V1_SHARES_DEFAULT
    return max(2, round(weight * V1_SHARES_DEFAULT / CPU_WEIGHT_DEFAULT))


_PLAIN_IDENTITY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def identity_slice(identity: str) -> str:
    """The name of an identity's slice: ``u-<name>`` for a plain name, ``h-<digest>`` for any
    other (a certificate name may hold anything; the two forms cannot collide)."""
    if _PLAIN_IDENTITY.fullmatch(identity):
        return f"u-{identity}"
    return "h-" + hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def is_slice(name: str) -> bool:
    return name.startswith(("u-", "h-"))


@dataclass(frozen=True)
class Usage:
    """What a job group consumed; ``None`` where this backend cannot tell."""

    cpu_seconds: float | None = None
    memory_peak: int | None = None  # bytes
    oom_kills: int = 0  # times the kernel OOM killer killed a task of this group
    pids_limit_hits: int = 0  # times a fork failed on the task limit
    memory_current: int | None = None  # bytes in use now (page cache included)


class JobCgroup(Protocol):
    """One job's group, present in every hierarchy the backend uses."""

    @property
    def name(self) -> str: ...

    @property
    def procs_files(self) -> list[Path]:
        """Every ``cgroup.procs`` the job's first process writes its pid into before exec."""
        ...

    def usage(self) -> Usage: ...

    def kill(self) -> None:
        """SIGKILL every process in the group, however it detached itself."""
        ...

    def terminate(self) -> None:
        """SIGTERM every process in the group now (the polite first step of a stop)."""
        ...

    async def wait_empty(self) -> None:
        """Return once no process is left in the group (at once if it never had one)."""
        ...

    async def wait_oom(self) -> None:
        """Return once the kernel OOM killer fired in this group (at once if it already did)."""
        ...

    def remove(self) -> None:
        """Remove the group everywhere; it must be empty. Removing twice is fine."""
        ...


class CgroupBackend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def controllers(self) -> frozenset[str]: ...

    def describe(self) -> str:
        """Several lines for ``jobd --check``: what was found, and why anything is missing."""
        ...

    def configure(self, jobs: Ceiling, each_slice: Ceiling) -> list[str]:
        """Set the ceiling of all jobs (the parent group) and of each slice, for the slices
        that exist and those made later. Returns what could not be set, one line each
        (a ceiling below what is in use now, a controller this host lacks)."""
        ...

    def create(self, name: str, limits: Limits, slice: str = "") -> JobCgroup:
        """The job group ``name`` in ``slice`` (made with its ceiling if need be; "" puts
        it right under the parent)."""
        ...

    def leftovers(self) -> Sequence[JobCgroup]:
        """Job groups under our parent group and its slices, e.g. from a daemon that died."""
        ...

    def remove_parent(self) -> None:
        """Remove the empty slices and the (empty) parent groups; what still holds a job
        group stays."""
        ...


def require_controllers(
    limits: Limits, available: Iterable[str], reasons: Mapping[str, str]
) -> None:
    """Raise FailedPrecondition naming the first limit whose controller is missing."""
    have = set(available)
    for limit in limits.requested():
        controller = LIMIT_CONTROLLER[limit]
        if controller not in have:
            why = reasons.get(controller, "not available")
            raise FailedPrecondition(
                f"cannot apply the {limit} limit: cgroup controller {controller!r} is "
                f"unavailable ({why})"
            )


def check_group_name(name: str) -> None:
    """Job group names become directory names next to control files: keep them plain."""
    ok = name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    if not ok or len(name) > 200:
        raise ValueError(f"invalid cgroup name {name!r}: use letters, digits, '-' and '_'")
