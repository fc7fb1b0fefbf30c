"""Checks made with a job's account: this thread takes its ids, nothing else does."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from jobd import impersonate
from jobd.accounts import lookup

pytestmark = pytest.mark.skipif(
    not impersonate.available(), reason="needs root on x86_64 or aarch64"
)
NOBODY = lookup("65534:65534")


def test_the_block_has_the_accounts_ids_and_then_the_daemons_again(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    before = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())
    with impersonate.seen_by(NOBODY):
        assert (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) == (65534,) * 4
        assert os.getgroups() == []
        assert not os.access(secret, os.R_OK)
    assert (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()) == before
    assert os.access(secret, os.R_OK)


def test_an_error_in_the_block_still_restores_the_ids() -> None:
    with pytest.raises(RuntimeError), impersonate.seen_by(NOBODY):
        raise RuntimeError("boom")
    assert (os.getuid(), os.geteuid()) == (0, 0)


def test_other_threads_keep_the_daemons_ids() -> None:
    inside, checked = threading.Event(), threading.Event()
    seen: list[int] = []

    def other() -> None:
        inside.wait(10)
        seen.append(os.geteuid())
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with impersonate.seen_by(NOBODY):
        inside.set()
        assert checked.wait(10)
        assert os.geteuid() == 65534
    thread.join()
    assert seen == [0]


def test_root_is_not_switched() -> None:
    with impersonate.seen_by(lookup("root")):
        assert os.geteuid() == 0
