"""The cgroup interface every backend implements. The values it speaks (limits, ceilings,
usage) are the model's: ``jobd.model.resources``.

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
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from jobd.model.errors import FailedPrecondition
from jobd.model.resources import CPU_WEIGHT_DEFAULT, LIMIT_CONTROLLER, Ceiling, Limits, Usage

# What a backend may offer; "kill" means a whole-tree kill that no process can escape.
CONTROLLERS = frozenset({"cpu", "memory", "io", "pids", "kill", "freeze"})

# cgroup v2's cpu.weight: 1-10000, 100 by default; v1's cpu.shares: 2-262144, 1024.
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
