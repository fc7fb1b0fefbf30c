"""The state directory: its layout, its lock, and that it is the daemon's alone."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from jobd.jobs.statedir import StateDir, StateDirError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_state_directory_is_the_daemons_alone(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.claim()
    try:
        assert mode(state.path) == 0o700
        assert mode(state.output) == 0o700
        assert mode(state.path / "jobd.lock") == 0o600
    finally:
        state.release()


def test_an_existing_one_open_to_others_is_closed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(0o755)
    state = StateDir(path)
    with caplog.at_level(logging.WARNING):
        state.claim()
    try:
        assert mode(path) == 0o700
        assert "was open to others (mode 0755): now 0700" in caplog.text
    finally:
        state.release()


def test_a_second_claim_names_the_holder(tmp_path: Path) -> None:
    first = StateDir(tmp_path / "state")
    first.claim()
    try:
        assert first.in_use()
        with pytest.raises(StateDirError, match=r"in use by another jobd \(pid \d+\)"):
            StateDir(tmp_path / "state").claim()
    finally:
        first.release()
    assert not first.in_use()


def test_as_a_context_it_is_claimed_for_the_block(tmp_path: Path) -> None:
    with StateDir(tmp_path / "state") as state:
        assert StateDir(tmp_path / "state").in_use()
        assert state.output.is_dir()
    assert not StateDir(tmp_path / "state").in_use()
