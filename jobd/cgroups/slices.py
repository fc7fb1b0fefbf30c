"""The groups between jobd's parent group and its job groups: one slice per identity.

Shared by the v1 and v2 backends: where the slices are (``parent/<slice>`` in each hierarchy),
how a ceiling is written in each version's files, and how leftovers and empty slices are found.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from jobd.cgroups.base import is_slice, v1_shares
from jobd.cgroups.files import describe_error, write_value
from jobd.model.resources import CPU_WEIGHT_DEFAULT, Ceiling

UNLIMITED_V1_MEMORY = -1  # what memory.limit_in_bytes takes for "no limit"


def write_v1_memory(directory: Path, limit: int | None) -> None:
    """memory.limit_in_bytes, and memory+swap where the kernel accounts swap. The kernel keeps
    limit <= memsw limit at every step, so the order depends on the direction."""
    value = UNLIMITED_V1_MEMORY if limit is None else limit
    memsw = directory / "memory.memsw.limit_in_bytes"
    files = [directory / "memory.limit_in_bytes"]
    if memsw.exists():
        files.append(memsw)
    try:
        for file in files:
            write_value(file, value)
    except OSError as exc:
        if exc.errno != errno.EINVAL or len(files) == 1:
            raise
        for file in reversed(files):  # raising: memsw first
            write_value(file, value)


def write_v1_ceiling(dirs: dict[str, Path], ceiling: Ceiling) -> list[str]:
    """A ceiling in the memory, pids and cpu hierarchies (those present); what failed, if
    any."""
    problems = []
    if "cpu" in dirs:
        try:
            write_value(dirs["cpu"] / "cpu.shares", v1_shares(ceiling.cpu_weight))
        except OSError as exc:
            problems.append(f"{exc.filename}: {describe_error(exc)}")
    if "memory" in dirs:
        try:
            write_v1_memory(dirs["memory"], ceiling.memory)
        except OSError as exc:
            problems.append(f"{exc.filename}: {describe_error(exc)}")
    if "pids" in dirs:
        try:
            write_value(dirs["pids"] / "pids.max", "max" if ceiling.pids is None else ceiling.pids)
        except OSError as exc:
            problems.append(f"{exc.filename}: {describe_error(exc)}")
    return problems


def write_v2_ceiling(path: Path, ceiling: Ceiling) -> list[str]:
    """memory.max (swap none), pids.max and cpu.weight, where the controllers reach
    ``path``."""
    problems = []
    values: list[tuple[str, int | str]] = [
        ("memory.max", "max" if ceiling.memory is None else ceiling.memory),
        ("memory.swap.max", 0 if ceiling.memory else "max"),
        ("pids.max", "max" if ceiling.pids is None else ceiling.pids),
        ("cpu.weight", CPU_WEIGHT_DEFAULT if ceiling.cpu_weight is None else ceiling.cpu_weight),
    ]
    for file, value in values:
        if not (path / file).exists():
            continue
        try:
            write_value(path / file, value)
        except OSError as exc:
            problems.append(f"{exc.filename}: {describe_error(exc)}")
    return problems


def remake(names: Iterable[str], make: Callable[[str], list[str]]) -> list[str]:
    """``make`` each slice again (with a new ceiling); what failed, one line each."""
    problems = []
    for name in names:
        try:
            problems += make(name)
        except OSError as exc:
            problems.append(f"{exc.filename}: {describe_error(exc)}")
    return problems


def slices_in(parent: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError), os.scandir(parent) as entries:
        return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)
                      and is_slice(e.name))  # fmt: skip
    return []


def job_groups_in(parent: Path) -> list[tuple[str, Path]]:
    """(name, directory) of every job group under ``parent``: in its slices, and right under
    it (where jobd before slices put them)."""
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(parent) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if not is_slice(entry.name):
                found.append((entry.name, Path(entry.path)))
                continue
            with contextlib.suppress(FileNotFoundError), os.scandir(entry.path) as inner:
                found += [(e.name, Path(e.path)) for e in inner
                          if e.is_dir(follow_symlinks=False)]  # fmt: skip
    return sorted(found)


def remove_empty(directories: Iterable[Path]) -> None:
    """rmdir each; one still in use (EBUSY, ENOTEMPTY) or gone already stays as it is."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
