"""Ceilings: what all jobs together, and each identity's jobs together, may take of the host.

All jobs live in jobd's parent cgroup, whose ceiling leaves the host a reserve of memory and
tasks (for jobd itself, sshd, the kernel): no number of jobs can take the host. Each identity's
jobs live in a slice of their own below it, whose ceiling is a share of what jobs may use: no
identity can take what the others need, whatever it starts in parallel. A ``user`` may not ask
one job for more than its identity's ceiling (nor for more CPU than the host has): that is
refused naming the maximum, and is what a user's job gets when it asks for nothing.

All jobs together also weigh less on the CPU than jobd, as the OOM killer takes a job before
jobd: a job that keeps every core busy must not slow the daemon that answers for it
(BENCHMARKS.md, "GetJob while a job writes flat out"). Jobs still get every cycle that
nothing else wants.

Built in: the reserve is a tenth of the host (at least 512 MiB and 1024 tasks); all jobs
together have a CPU weight of 10, where a group's default is 100 (Nomad gives a task 100 of
cgroup v1's 1024); each identity may use half of what is left. ``[limits.reserve]`` and
``[limits.identity]`` change them. Pure: the host's facts come in as :class:`Host`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from jobd.model.job import LimitRequest
from jobd.model.resources import CPU_WEIGHT_MAX, Ceiling
from jobd.model.units import format_size, parse_size
from jobd.policy.auth import Role

MiB = 1 << 20
MIN_RESERVE_MEMORY = 512 * MiB
MIN_RESERVE_PIDS = 1024
RESERVE_SHARE = 0.1
IDENTITY_SHARE = 0.5
JOBS_CPU_WEIGHT = 10

# A size or a count, or a share ("50%": a float in (0, 1]) of what all jobs may use.
Amount = int | float


@dataclass(frozen=True)
class Host:
    memory: int  # bytes of RAM
    tasks: int  # the most tasks the kernel will make: min(pid_max, threads-max)
    cpus: int

    @classmethod
    def read(cls) -> Host:
        """This host's facts, from /proc (a few small reads, at start and on reload)."""
        memory = 0
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
        tasks = min(_read_int("/proc/sys/kernel/pid_max"),
                    _read_int("/proc/sys/kernel/threads-max"))  # fmt: skip
        return cls(memory, tasks, os.cpu_count() or 1)


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as f:
        return int(f.read().strip())


@dataclass(frozen=True)
class CeilingPolicy:
    """As configured; None: built in."""

    reserve_memory: int | None = None
    reserve_pids: int | None = None
    identity_memory: Amount = IDENTITY_SHARE
    identity_pids: Amount = IDENTITY_SHARE
    jobs_cpu_weight: int = JOBS_CPU_WEIGHT

    def jobs(self, host: Host) -> Ceiling:
        """The parent group's ceiling: the host less its reserve (never below one job's
        worth: a reserve larger than the host leaves jobs 64 MiB and 64 tasks)."""
        memory = self.reserve_memory
        if memory is None:
            memory = max(MIN_RESERVE_MEMORY, int(host.memory * RESERVE_SHARE))
        pids = self.reserve_pids
        if pids is None:
            pids = max(MIN_RESERVE_PIDS, int(host.tasks * RESERVE_SHARE))
        return Ceiling(max(64 * MiB, host.memory - memory), max(64, host.tasks - pids),
                       self.jobs_cpu_weight)

    def each_identity(self, host: Host) -> Ceiling:
        jobs = self.jobs(host)
        assert jobs.memory is not None and jobs.pids is not None
        return Ceiling(_amount(self.identity_memory, jobs.memory),
                       _amount(self.identity_pids, jobs.pids))  # fmt: skip

    def user_maxima(self, host: Host) -> LimitRequest:
        """The most one ``user`` job may ask for: its identity's ceiling, the host's CPUs."""
        each = self.each_identity(host)
        return LimitRequest(cpu=float(host.cpus), memory=each.memory, pids=each.pids)

    def describe(self, host: Host) -> list[str]:
        """Lines for ``jobd --check``."""
        jobs, each = self.jobs(host), self.each_identity(host)
        assert jobs.memory is not None and jobs.pids is not None
        return [
            f"host: {format_size(host.memory)} of memory, {host.tasks} tasks, {host.cpus} CPUs",
            f"ceiling for all jobs together: {jobs.describe()} (the host keeps "
            f"{format_size(host.memory - jobs.memory)} and {host.tasks - jobs.pids} tasks)",
            f"ceiling for each identity's jobs together: {each.describe()}",
        ]


def _amount(value: Amount, whole: int) -> int:
    if isinstance(value, float):
        return max(1, int(whole * value))
    return min(value, whole)


def builtin_maxima(policy: CeilingPolicy, host: Host) -> dict[Role, LimitRequest]:
    return {Role.USER: policy.user_maxima(host)}


def merge_maxima(
    configured: Mapping[Role, LimitRequest], builtin: Mapping[Role, LimitRequest]
) -> dict[Role, LimitRequest]:
    """Per role and per limit, the configured maximum, else the built-in one."""
    merged = dict(builtin)
    for role, request in configured.items():
        base = merged.get(role, LimitRequest())
        values = {name: value for name, value in vars(request).items()
                  if value not in (None, "")}  # fmt: skip
        merged[role] = replace(base, **values)
    return merged


def parse_reserve(table: Mapping[str, Any], where: str) -> dict[str, int]:
    """``[limits.reserve]``: memory = "2G", pids = 1024, cpu_weight = 10."""
    unknown = sorted(set(table) - {"memory", "pids", "cpu_weight"})
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    values = {}
    if "memory" in table:
        values["reserve_memory"] = _size(table["memory"], f"{where}: memory")
    if "pids" in table:
        values["reserve_pids"] = _count(table["pids"], f"{where}: pids")
    if "cpu_weight" in table:
        weight = _count(table["cpu_weight"], f"{where}: cpu_weight")
        if weight > CPU_WEIGHT_MAX:
            raise ValueError(f"{where}: cpu_weight: at most {CPU_WEIGHT_MAX}, not {weight}")
        values["jobs_cpu_weight"] = weight
    return values


def parse_identity(table: Mapping[str, Any], where: str) -> dict[str, Amount]:
    """``[limits.identity]``: memory = "50%" | "8G", pids = "50%" | 8192."""
    unknown = sorted(set(table) - {"memory", "pids"})
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Amount] = {}
    for name, parse in (("memory", _size), ("pids", _count)):
        if name not in table:
            continue
        raw = table[name]
        share = _share(raw, f"{where}: {name}")
        values[f"identity_{name}"] = share if share is not None else parse(raw, f"{where}: {name}")
    return values


def _share(raw: object, where: str) -> float | None:
    if not (isinstance(raw, str) and raw.strip().endswith("%")):
        return None
    try:
        value = float(raw.strip()[:-1]) / 100
    except ValueError:
        raise ValueError(f"{where}: {raw!r} is not a percentage") from None
    if not 0 < value <= 1:
        raise ValueError(f"{where}: {raw!r} must be above 0% and at most 100%")
    return value


def _size(raw: object, where: str) -> int:
    try:
        value = parse_size(str(raw))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if value <= 0:
        raise ValueError(f"{where}: must be more than 0")
    return value


def _count(raw: object, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise ValueError(f"{where}: must be a positive whole number, not {raw!r}")
    return raw
