"""A job's limits: what makes them invalid."""

from __future__ import annotations

import pytest

from jobd.cgroups import Limits

MiB = 1 << 20




def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="cpu"):
        Limits(cpu=0)
    with pytest.raises(ValueError, match="memory"):
        Limits(memory=-1)
    with pytest.raises(ValueError, match="io_device"):
        Limits(io_read_bps=10 * MiB)
    limits = Limits(cpu=0.5, pids=3, io_write_bps=1, io_device=(8, 0))
    assert limits.requested() == ["cpu", "io_write_bps", "pids"]
    assert limits.controllers() == ["cpu", "io", "pids"]


