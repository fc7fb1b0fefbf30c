"""Which block device an IO limit names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobd.cgroups import block_device


def test_block_device_maps_a_partition_to_its_disk(tmp_path: Path) -> None:
    # A fake /sys/dev/block in which the file system under tmp_path sits on partition 1
    # of a disk numbered 8:0.
    st = os.stat(tmp_path)
    disk = tmp_path / "sys" / "block" / "sda"
    (disk / "sda1").mkdir(parents=True)
    (disk / "dev").write_text("8:0\n")
    (disk / "sda1" / "partition").write_text("1\n")
    dev_block = tmp_path / "dev-block"
    dev_block.mkdir()
    (dev_block / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}").symlink_to(disk / "sda1")
    assert block_device(tmp_path, dev_block) == (8, 0)


def test_block_device_refuses_a_non_block_filesystem() -> None:
    with pytest.raises(ValueError, match="not a block device"):
        block_device("/proc")


