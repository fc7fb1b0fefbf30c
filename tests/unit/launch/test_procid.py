"""Process identity: a key names one process ever, so a later daemon never kills a stranger."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from jobd.launch import procid


@pytest.fixture
def leader() -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping process that leads its own process group."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def pidfs_or_skip() -> None:
    if not procid._pidfs():
        pytest.skip("pidfds share one inode on this kernel (no pidfs before Linux 6.9); "
                    "keys use the start time, tested below")


def test_a_key_from_the_pidfd_names_the_process_on_pidfs(leader: subprocess.Popen[bytes]) -> None:
    pidfs_or_skip()
    pidfd = os.pidfd_open(leader.pid)
    try:
        key = procid.identity(leader.pid, pidfd)
    finally:
        os.close(pidfd)
    _, mark, pid = key.split("/")
    assert mark.startswith(procid.PIDFS) and pid == str(leader.pid)
    assert procid.kill_group_if_same(key)
    assert leader.wait(timeout=10) == -signal.SIGKILL


def test_without_a_pidfd_the_key_is_the_start_time(leader: subprocess.Popen[bytes]) -> None:
    key = procid.identity(leader.pid)
    mark = key.split("/")[1]
    assert mark.isdigit()  # clock ticks since boot, as /proc/PID/stat gives it
    assert procid.kill_group_if_same(key)
    assert leader.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.parametrize("mark", ["pidfs-1", "1"])
def test_another_process_with_the_same_pid_is_left_alone(
    leader: subprocess.Popen[bytes], mark: str
) -> None:
    # The key of an earlier process that had this pid: it names someone else now.
    boot = procid.identity(leader.pid).split("/")[0]
    assert not procid.kill_group_if_same(f"{boot}/{mark}/{leader.pid}")
    assert leader.poll() is None


def test_a_key_from_another_boot_or_of_a_gone_process_kills_nothing(
    leader: subprocess.Popen[bytes],
) -> None:
    key = procid.identity(leader.pid)
    _, mark, pid = key.split("/")
    assert not procid.kill_group_if_same(f"another-boot/{mark}/{pid}")
    assert leader.poll() is None
    gone = subprocess.Popen(["true"])
    gone_key = procid.identity(gone.pid)
    gone.wait()
    assert not procid.kill_group_if_same(gone_key)
    assert not procid.kill_group_if_same("")
