"""The daemon's private key must be readable by the daemon alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobd.api.keyfile import check_private
from jobd.api.tls import TLSConfigError


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_a_key_only_its_owner_can_use_is_fine(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "server.key"
    key.write_text("key")
    key.chmod(mode)
    check_private(key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o610])
def test_a_key_its_group_or_others_can_use_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "server.key"
    key.write_text("key")
    key.chmod(mode)
    with pytest.raises(TLSConfigError, match=f"mode {mode:04o}\\): run `chmod 600 {key}`"):
        check_private(key)


def test_a_missing_key_is_left_to_the_tls_setup_to_report(tmp_path: Path) -> None:
    check_private(tmp_path / "missing.key")
