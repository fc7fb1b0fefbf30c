"""The audit log file: mode, one line per record, failures logged once and never raised."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from jobd.api.audit import AuditLog
from jobd.config import Config, load


def test_lines_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"old": 1}\n')
    path.chmod(0o644)
    audit = AuditLog.open(path)
    audit.record(identity="alice", peer="1.2.3.4:5", action="GetJob", job_id="j",
                 outcome="NOT_FOUND", message="m" * 1000)
    audit.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old, entry = (json.loads(line) for line in path.read_text().splitlines())
    assert old == {"old": 1}  # appended, never truncated
    assert entry["identity"] == "alice" and entry["outcome"] == "NOT_FOUND"
    assert len(entry["message"]) == 200


def test_a_failed_write_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog.open(tmp_path / "audit.log")
    assert audit.fd is not None
    os.close(audit.fd)
    audit.fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            audit.record(identity="", peer="", action="GetJob", job_id="", outcome="ok")
    assert len([r for r in caplog.records if "audit log" in r.getMessage()]) == 1
    audit.close()


def test_config_file_and_flag(tmp_path: Path) -> None:
    file = tmp_path / "jobd.toml"
    file.write_text('audit_log = "/var/log/jobd/audit.log"\n')
    config, _ = load(["--config", str(file)])
    assert config.audit_log == Path("/var/log/jobd/audit.log")
    config, _ = load(["--config", str(file), "--audit-log", "/x/a.log"])
    assert config.audit_log == Path("/x/a.log")
    assert Config().audit_log is None
