"""The resources a job or a group of jobs may use, and what a job used: the values the
policy decides, the cgroup backends apply and measure, and the API reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

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


CPU_WEIGHT_MAX = 10_000
CPU_WEIGHT_DEFAULT = 100


@dataclass(frozen=True)
class Usage:
    """What a job group consumed; ``None`` where this backend cannot tell."""

    cpu_seconds: float | None = None
    memory_peak: int | None = None  # bytes
    oom_kills: int = 0  # times the kernel OOM killer killed a task of this group
    pids_limit_hits: int = 0  # times a fork failed on the task limit
    memory_current: int | None = None  # bytes in use now (page cache included)
