"""Start-up failures are one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import Certs


def run_jobd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobd", *args], capture_output=True, text=True, timeout=60
    )


def test_port_in_use(certs: Certs, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        state = str(tmp_path / "s")
        result = run_jobd("--listen", f"127.0.0.1:{port}", "--cacert", str(certs.ca),
                          "--cert", str(certs.server), "--state-dir", state)  # fmt: skip
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_ca_file(certs: Certs, tmp_path: Path) -> None:
    result = run_jobd("--cacert", str(tmp_path / "nope.crt"), "--cert", str(certs.server),
                      "--state-dir", str(tmp_path / "s"))  # fmt: skip
    assert result.returncode == 1
    assert f"jobd: TLS setup failed: cannot load CA certificate {tmp_path / 'nope.crt'}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text("grace = -1\n")
    result = run_jobd("--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == f"jobd: {config}: grace must be a number of seconds, 0 to 86400"


def test_check_leaves_a_running_daemons_cgroup_parent_alone(certs: Certs, tmp_path: Path) -> None:
    from harness import Daemon
    from jobd.config import cgroup_parent_for

    daemon = Daemon(certs, tmp_path / "state").start()
    try:
        parent = cgroup_parent_for(tmp_path / "state")
        before = {p for p in Path("/sys/fs/cgroup").glob(f"*/{parent}")}
        result = run_jobd("--check", "--state-dir", str(tmp_path / "state"))
        assert result.returncode == 0, result.stderr
        after = {p for p in Path("/sys/fs/cgroup").glob(f"*/{parent}")}
        assert after == before
    finally:
        assert daemon.stop() == 0


def test_the_log_is_json_lines_with_job_and_identity_fields(certs: Certs, tmp_path: Path) -> None:
    from harness import Daemon, start

    daemon = Daemon(certs, tmp_path / "state").start()
    try:
        async def scenario(stub: object) -> str:
            return await start(stub, ["true"])

        job_id = daemon.run("client_1", scenario)
    finally:
        assert daemon.stop() == 0
    entries = daemon.entries()
    assert len(entries) == len(daemon.log)  # every line is one JSON object
    started = [e for e in entries if e.get("job") == job_id and "started" in e["msg"]]
    assert started and started[0]["identity"] == "client_1"
    assert {"time", "level", "logger", "msg"} <= set(started[0])


def test_systemd_readiness_and_stopping_are_notified(
    certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import Daemon

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(60)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        daemon = Daemon(certs, tmp_path / "state").start()
        try:
            # Sent once it accepts connections; STATUS is what `systemctl status` shows.
            ready = f"READY=1\nSTATUS=listening on {daemon.server}"
            assert sock.recv(4096) == ready.encode()
        finally:
            assert daemon.stop() == 0
        assert sock.recv(4096) == b"STOPPING=1"


def test_the_systemd_unit_lets_jobd_stop_its_own_jobs() -> None:
    unit = (Path(__file__).resolve().parents[2] / "jobd" / "systemd" / "jobd.service").read_text()
    for line in ("Type=notify", "KillMode=mixed", "Delegate=yes", "ExecReload=/bin/kill -HUP"):
        assert line in unit


def test_check_reports_the_accounts_jobs_run_as(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text('[run_as.identity]\nalice = "61001:61002"\n')
    result = run_jobd("--check", "--no-cgroups", "--state-dir", str(tmp_path / "state"),
                      "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    if os.geteuid() == 0:
        assert any(line.startswith("run as for user: nobody:") for line in lines), lines
        assert any(line.startswith("run as for admin: root:") for line in lines), lines
        assert "run as for identity alice: 61001:61002 (61001:61002)" in lines
        assert any(line.startswith("launcher: ") for line in lines), lines
    else:
        assert any("every job runs as the daemon's own user" in line for line in lines), lines


async def test_a_start_up_that_fails_after_the_claim_releases_the_state_directory(
    certs: Certs, tmp_path: Path
) -> None:
    # The state directory is claimed and the store opened before the limits are checked
    # against this host: a bad io_device fails the start there, and both are let go (one
    # AsyncExitStack holds what start-up opens).
    from jobd.config import Config, ConfigError
    from jobd.jobs.statedir import StateDir
    from jobd.server import serve

    config = Config(cacert=certs.ca, cert=certs.server, state_dir=tmp_path / "state",
                    cgroups=False, io_devices=(str(tmp_path / "no-such-device"),))  # fmt: skip
    with pytest.raises(ConfigError):
        await serve(config)
    assert (tmp_path / "state" / "jobs.db").exists()  # it got that far
    assert not StateDir(tmp_path / "state").in_use()
