"""The committed generated API modules match what `nox -s proto` makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("jobs_pb2.py", "jobs_pb2.pyi", "jobs_grpc.py")


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "proto" / "gen.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    stale = [
        name
        for name in GENERATED
        if (tmp_path / "jobd" / "v1" / name).read_bytes()
        != (REPO / "jobd" / "v1" / name).read_bytes()
    ]
    assert not stale, f"run `nox -s proto` and commit: {stale} differ from proto/"
