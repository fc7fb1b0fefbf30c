"""Output on disk: each identity's budget, the disk's free reserve, and what they drop."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobd.jobs import diskuse
from jobd.jobs.diskuse import DiskUse
from jobd.jobs.output import OVERHEAD, OutputLog, Stream


def test_a_budget_is_per_identity(tmp_path: Path) -> None:
    use = DiskUse(tmp_path, budget=lambda owner: 100 if owner == "alice" else 1000, min_free=0)
    assert use.grant("alice", 60) == (60, "")
    granted, why = use.grant("alice", 60)
    assert granted == 40 and "alice's output budget of 100 B reached" in why
    assert use.grant("bob", 500) == (500, "")  # alice's use is alice's alone
    assert (use.by_owner["alice"], use.by_owner["bob"], use.total) == (100, 500, 600)
    use.released("alice", 100)
    assert use.grant("alice", 10) == (10, "")


def test_the_disk_keeps_its_reserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = {"blocks": 10}
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(
        f_bavail=free["blocks"], f_frsize=1 << 20))  # fmt: skip
    monkeypatch.setattr(diskuse, "CHECK_EVERY", 1)  # look at every write, for the test
    use = DiskUse(tmp_path, min_free=5 << 20)
    assert use.grant("alice", 100) == (100, "")
    free["blocks"] = 4  # 4 MiB free: under the 5 MiB reserve
    granted, why = use.grant("admin", 100)
    assert granted == 0 and "less than 5 MiB free" in why


def test_a_log_over_its_owners_budget_drops_and_counts_as_the_cap_does(tmp_path: Path) -> None:
    use = DiskUse(tmp_path, budget=lambda owner: 1000, min_free=0)
    log = OutputLog(tmp_path / "j.log", owner="alice", use=use)
    log.append(Stream.STDOUT, b"x" * 800)
    log.append(Stream.STDOUT, b"y" * 800)
    log.append(Stream.STDOUT, b"z" * 10)
    log.close()
    # What counts is what the disk holds, framing included (a frame's header may pass the
    # budget by its 9 bytes).
    kept = 1000 - OVERHEAD
    assert (log.data_bytes, log.dropped_bytes) == (kept, 1610 - kept)
    assert use.total == log.size == (tmp_path / "j.log").stat().st_size
    assert log.error is not None and "alice's output budget" in log.error


def test_a_request_is_kept_whole_or_refused(tmp_path: Path) -> None:
    use = DiskUse(tmp_path, budget=lambda owner: 1000, min_free=0)
    freed = []

    def reclaim(owner: str, need: int) -> None:  # retention's: here, 200 bytes of old output
        freed.append((owner, need))
        use.released(owner, 200)

    use.reclaim = reclaim
    assert use.take("alice", 700) == ""
    assert use.take("alice", 400) == ""  # after its old output made room
    assert freed == [("alice", 400)] and use.by_owner["alice"] == 900
    why = use.take("alice", 1001)
    assert why.startswith("alice's disk budget of 1000 B ([quotas] output) would be passed")
    assert use.by_owner["alice"] == 900  # nothing counted, nothing reclaimed in vain
    assert len(freed) == 1
