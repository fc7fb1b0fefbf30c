"""The backend when cgroups cannot be used: jobs run, unlimited and uncontained."""

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
from jobd.model.resources import Ceiling, Limits, Usage


class NoneCgroup:
    """Stands in for a group so callers need no special case; it contains nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs_files: list[Path] = []

    def usage(self) -> Usage:
        return Usage()

    def kill(self) -> None:
        pass  # nothing to go through: the caller must signal its process group itself

    def terminate(self) -> None:
        pass

    async def wait_empty(self) -> None:
        pass

    async def wait_oom(self) -> None:
        await trio.sleep_forever()

    def remove(self) -> None:
        pass


class NoneBackend:
    name = "none"
    controllers: frozenset[str] = frozenset()

    def __init__(self, reason: str, details: str = "") -> None:
        """``reason``: one line, repeated in every refusal; ``details``: what was found."""
        self.reason = reason
        self.details = details

    def describe(self) -> str:
        lines = [
            "cgroups: none - jobs run without limits, and stop kills only the process group",
            f"  reason: {self.reason}",
        ]
        lines.extend(f"  | {line}" for line in self.details.splitlines())
        return "\n".join(lines)

    def configure(self, jobs: Ceiling, each_slice: Ceiling) -> list[str]:
        return [] if jobs == each_slice == Ceiling() else [f"ceilings not set: {self.reason}"]

    def create(self, name: str, limits: Limits, slice: str = "") -> NoneCgroup:
        check_group_name(name)
        require_controllers(limits, (), dict.fromkeys(CONTROLLERS, self.reason))
        return NoneCgroup(name)

    def leftovers(self) -> list[NoneCgroup]:
        return []

    def remove_parent(self) -> None:
        pass


def _conforms(backend: NoneBackend, group: NoneCgroup) -> tuple[CgroupBackend, JobCgroup]:
    return backend, group  # mypy checks these against the protocols here
