"""What the tests of the real backends share: skips, the job shim, /proc readers. The
fixtures that use them are in conftest.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from jobd.cgroups import (
    CgroupBackend,
    JobCgroup,
    NoneBackend,
    detect,
)
from jobd.cgroups.mounts import Hierarchy, find_hierarchies
from jobd.cgroups.v2 import V2Backend

F = TypeVar("F", bound=Callable[..., object])




requires_cgroups = pytest.mark.cgroups
FAIL_AFTER = 20.0


def own_hierarchies() -> list[Hierarchy]:
    found, _ = find_hierarchies(read_text("/proc/self/mountinfo"), read_text("/proc/self/cgroup"))
    return found


def backend_or_skip(parent: str, variant: str) -> CgroupBackend:
    if os.geteuid() != 0:
        pytest.skip("needs root and cgroups: not running as root")
    backend = detect(parent)
    if isinstance(backend, NoneBackend):
        pytest.skip(f"needs root and cgroups: {backend.reason}")
    if variant == "detected":
        return backend
    # The v2 backend on a v1 machine's controller-less cgroup2: no limits, but groups,
    # cgroup.kill, cgroup.events, cpu.stat and leftovers all work as on a v2 machine.
    backend.remove_parent()
    if backend.name == "v2":
        pytest.skip("needs a hybrid machine: the detected backend is v2 already")
    unified = [h for h in own_hierarchies() if h.version == 2]
    if not unified:
        pytest.skip("needs root and cgroups: no cgroup2 hierarchy mounted")
    v2 = V2Backend(parent, unified[0], [])
    if v2.unusable_reason:
        pytest.skip(f"needs root and cgroups: {v2.unusable_reason}")
    return v2


def needs(*controllers: str, backend: str | None = None) -> Callable[[F], F]:
    """What a root test needs; checked by the sync ``real_backend`` fixture, because a skip
    raised inside an async test loses its reason under pytest-trio."""

    def mark(test: F) -> F:
        test.needs = (controllers, backend)  # type: ignore[attr-defined]
        return test

    return mark


def skip_unless_has(backend: CgroupBackend, request: pytest.FixtureRequest) -> None:
    controllers, name = getattr(request.function, "needs", ((), None))
    if name is not None and backend.name != name:
        pytest.skip(f"needs the {name} backend; this one is {backend.name}")
    missing = [c for c in controllers if c not in backend.controllers]
    if missing:
        pytest.skip(f"needs root and cgroups: {missing} unavailable in the {backend.name} backend")


def leftover_dirs(parent: str) -> list[str]:
    mounts = {h.mount_point for h in own_hierarchies()}
    return [
        os.path.join(root, d)
        for mount in mounts
        for root, dirs, _ in os.walk(mount)
        for d in dirs
        if d == parent
    ]




# What the supervisor's shim does: join every group, then become the command.
SHIM = 'for f in "$@"; do echo $$ > "$f" || exit 126; done; echo joined; '


async def spawn_in(
    group: JobCgroup, script: str, children: list[trio.Process], **kwargs: object
) -> trio.Process:
    """Start ``script`` under /bin/sh inside ``group``; return once it has joined."""
    argv = ["/bin/sh", "-c", SHIM + script, "sh", *map(str, group.procs_files)]
    proc = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        **kwargs,  # type: ignore[arg-type]
    )
    children.append(proc)
    assert await read_line(proc) == b"joined"
    return proc


async def read_line(proc: trio.Process) -> bytes:
    assert proc.stdout is not None
    data = b""
    with trio.fail_after(FAIL_AFTER):
        while not data.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                break
            data += chunk
    return data.strip()


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


def members(group: JobCgroup) -> set[int]:
    return {int(pid) for f in group.procs_files for pid in f.read_text().split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def control(group: JobCgroup, file: str) -> str:
    """A control file's content, from whichever of the group's directories has it."""
    for procs in group.procs_files:
        if (procs.parent / file).exists():
            return (procs.parent / file).read_text().strip()
    raise AssertionError(f"no {file} in {group.procs_files}")


