"""Which block device an IO limit should name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SYS_DEV_BLOCK = Path("/sys/dev/block")


def block_device(
    path: str | os.PathLike[str], sys_dev_block: Path = SYS_DEV_BLOCK
) -> tuple[int, int]:
    """(major, minor) of the whole disk behind ``path``.

    ``path`` is either a block device node (``/dev/vda``) or any file or directory, in which
    case the device holding its file system is used. Partitions are mapped to their disk:
    throttling is accounted per request queue, which belongs to the disk, and some kernels
    refuse a partition in blkio/io.max.
    """
    st = os.stat(path)
    dev = st.st_rdev if stat.S_ISBLK(st.st_mode) else st.st_dev
    major, minor = os.major(dev), os.minor(dev)
    if not (sys_dev_block / f"{major}:{minor}").exists():
        raise ValueError(
            f"{os.fspath(path)!r} is on device {major}:{minor}, which is not a block device "
            "(tmpfs, overlay or btrfs subvolume?); name the disk explicitly"
        )
    return whole_disk(major, minor, sys_dev_block)


def whole_disk(major: int, minor: int, sys_dev_block: Path = SYS_DEV_BLOCK) -> tuple[int, int]:
    """The disk of block device ``major:minor`` (itself, unless it is a partition)."""
    entry = sys_dev_block / f"{major}:{minor}"
    if not entry.exists():
        raise ValueError(f"{major}:{minor} is not a block device on this machine")
    if (entry / "partition").exists():
        # /sys/dev/block/M:m links to .../block/<disk>/<partition>; the disk is the parent.
        disk = entry.resolve().parent / "dev"
        major_text, minor_text = disk.read_text().strip().split(":")
        return int(major_text), int(minor_text)
    return major, minor
