"""End to end as root: jobs run as unprivileged accounts and cannot reach the daemon.

The daemon's certificates and state directory live in a directory every account may enter
(pytest's own temporary directories are root's alone, which would make the file tests pass
for the wrong reason); a world-readable file next to the key is the control that shows a job
could read it if the permissions allowed. Jobs use only system programs (the tests' Python may
live where an unprivileged account cannot run it).
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib import Status

from harness import (
    Certs,
    Daemon,
    collect,
    expect_status,
    make_certs,
    read_until,
    start,
    stop,
    wait_until,
)
from jobd.launch import binary
from jobd.policy.accounts import lookup
from jobd.v1 import jobs_pb2 as pb

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch accounts"),
    pytest.mark.skipif(binary.compiled() is None, reason="needs the jobd launcher (setup.py)"),
]
NOBODY = lookup("65534")
# The user role without namespaces: what stands between a job and the host is its account.
NO_ISOLATION = '[isolation.user]\ndefault = "none"\nallow_network = true\n'
OWN_ACCOUNTS = '[run_as.identity]\nclient_1 = "61001"\nclient_2 = "61002"\n'
OWN_UIDS = (61001, 61002)


@pytest.fixture
def certs(shared: Path) -> Certs:
    directory = shared / "certs"
    directory.mkdir(mode=0o755)
    return make_certs(directory)


@pytest.fixture
def daemons(shared: Path, certs: Certs) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()
        left = [pid for pid in _pids() if _uid(pid) in OWN_UIDS]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes of the test accounts left behind: {left}"


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def launch(daemons: list[Daemon], shared: Path, certs: Certs, config: str = "") -> Daemon:
    daemon = Daemon(certs, shared / "state", config_extra=config, run_as="").start()
    daemons.append(daemon)
    return daemon


async def run_job(stub: Any, argv: list[str], **kw: Any) -> tuple[str, str, pb.Job]:
    job_id = await start(stub, argv, **kw)
    out, err, final, _ = await collect(stub, job_id)
    return out.decode(), err.decode(), final


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_user_jobs_run_as_nobody_and_admin_jobs_as_root(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)

    async def scenario(stub: Any) -> tuple[str, pb.Job]:
        out, err, final = await run_job(stub, sh("id -u; id -g; id -G; echo $USER $HOME"))
        assert final.result.exit_code == 0, err
        job = await stub.GetJob(pb.GetJobRequest(job_id=final.id))
        return out, job

    out, job = daemon.run("client_1", scenario)
    assert out.split("\n")[:4] == ["65534", str(NOBODY.gid), str(NOBODY.gid), "nobody /"]
    assert job.run_as == NOBODY.describe()
    out, job = daemon.run("client_0", scenario)
    root = lookup("root")
    assert out.split("\n")[0] == "0"
    assert out.split("\n")[3] == f"root {root.home}"  # the daemon's own account: no switch
    assert job.run_as.startswith("root:")


def test_an_unprivileged_job_cannot_read_the_key_or_the_state_directory(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs, NO_ISOLATION)
    state = shared / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    targets = [certs.ca, certs.server, state / "jobs.db", state / "audit.log"]
    script = "".join(
        f'if cat "{path}" >/dev/null 2>&1; then echo "read {path}"; '
        f'else echo "denied {path}"; fi\n'
        for path in targets
    )
    script += f'if ls "{state}" >/dev/null 2>&1; then echo listed; else echo "not listed"; fi\n'

    async def scenario(stub: Any) -> str:
        out, err, final = await run_job(stub, sh(script))
        assert final.result.exit_code == 0, err
        return out

    lines = daemon.run("client_1", scenario).splitlines()
    assert lines == [
        f"read {certs.ca}",  # the control: the directory is open, the permissions decide
        f"denied {certs.server}",
        f"denied {state / 'jobs.db'}",
        f"denied {state / 'audit.log'}",
        "not listed",
    ]


def test_an_unprivileged_job_cannot_signal_or_inspect_the_daemon(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs, NO_ISOLATION)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    script = (
        f"kill -0 {pid} 2>&1 || echo no-signal\n"
        f"kill -KILL {pid} 2>&1 || echo no-kill\n"
        f"cat /proc/{pid}/environ >/dev/null 2>&1 || echo no-environ\n"  # the ptrace check
        f"ls /proc/{pid}/fd >/dev/null 2>&1 || echo no-fds\n"
        "grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status\n"
        "ls /proc/self/fd\n"
    )

    async def scenario(stub: Any) -> str:
        out, err, final = await run_job(stub, sh(script))
        assert final.result.exit_code == 0, err
        # The daemon is still there to answer.
        await stub.GetJob(pb.GetJobRequest(job_id=final.id))
        return out

    out = daemon.run("client_1", scenario)
    for word in ("no-signal", "no-kill", "no-environ", "no-fds"):
        assert word in out.split("\n"), out
    assert "Operation not permitted" in out
    status = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    # stdin, stdout, stderr, and the directory ls itself reads.
    fds = [line for line in out.splitlines() if line.isdigit()]
    assert fds == ["0", "1", "2", "3"]
    assert daemon.proc.poll() is None


def _kill_from_another_user(daemon: Daemon) -> tuple[str, pb.Job]:
    """client_1 runs a sleep; client_2's job tries SIGKILL on each of its processes."""

    async def victim(stub: Any) -> str:
        job_id = await start(stub, sh("echo ready; exec sleep 600"))
        await read_until(stub, job_id, b"ready")
        return job_id

    job_id = daemon.run("client_1", victim)
    job = daemon.run("client_1", lambda s: s.GetJob(pb.GetJobRequest(job_id=job_id)))
    pids = _tree(job.pid)
    assert pids, "the victim has no processes"
    script = "".join(f"kill -KILL {p} 2>/dev/null && echo killed {p}\n" for p in pids) + "true"

    async def attacker(stub: Any) -> str:
        out, err, final = await run_job(stub, sh(script))
        assert final.result.exit_code == 0, err
        return out

    out = daemon.run("client_2", attacker)

    async def after(stub: Any) -> pb.Job:
        if "killed" in out:
            # Killed: its end is recorded once the daemon has reaped it and its group.
            _, _, final, _ = await collect(stub, job_id)
            return final
        job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        if job.state != pb.JOB_STATE_FINISHED:
            await stop(stub, job_id)
        return job

    return out, daemon.run("client_1", after)


def _tree(pid: int) -> list[int]:
    """``pid`` and every descendant of it (the victim job's processes, seen from the host)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                todo += [int(c) for c in children.split()]
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    "config",
    [
        pytest.param("", id="both-nobody-in-their-own-pid-namespaces"),
        pytest.param(NO_ISOLATION + OWN_ACCOUNTS, id="own-accounts-no-namespaces"),
    ],
)
def test_a_job_cannot_kill_another_users_job(
    daemons: list[Daemon], shared: Path, certs: Certs, config: str
) -> None:
    daemon = launch(daemons, shared, certs, config)
    out, victim = _kill_from_another_user(daemon)
    assert "killed" not in out
    assert victim.state == pb.JOB_STATE_RUNNING


def test_the_control_one_account_and_no_namespaces_is_no_boundary(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    # What the two cases above rely on: with the same account and no PID namespace, the kill
    # goes through (so the test above can fail, and the README says which setup is safe).
    daemon = launch(daemons, shared, certs, NO_ISOLATION)
    # The daemon said so at start.
    assert any("user jobs of different identities all run as nobody" in line
               for line in daemon.log), "\n".join(daemon.log)
    out, victim = _kill_from_another_user(daemon)
    assert "killed" in out
    assert victim.state == pb.JOB_STATE_FINISHED
    assert victim.result.signal == signal.SIGKILL


def test_the_requested_environment_reaches_the_job_and_not_roots_helpers(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)  # full isolation: the whole launch as root
    env = {"LD_PRELOAD": "/nonexistent/jobd-test.so", "GREETING": "it's $HOME `id`\nline 2"}

    async def scenario(stub: Any) -> tuple[str, str, pb.Job]:
        return await run_job(stub, ["/usr/bin/env", "-0"], env=env)

    out, err, final = daemon.run("client_1", scenario)
    assert final.result.exit_code == 0, err
    seen = dict(item.split("=", 1) for item in out.split("\0") if item)
    assert seen["GREETING"] == env["GREETING"]
    assert seen["LD_PRELOAD"] == env["LD_PRELOAD"]
    assert seen["USER"] == "nobody"
    assert not [name for name in seen if name.startswith("JOBD_") and name != "JOBD_JOB_ID"]
    # Only the command itself (env, as nobody) was asked to preload: the launcher has no
    # dynamic loader, and runs no other program.
    assert err.count("cannot be preloaded") == 1, err


def test_a_forbidden_working_directory_or_program_is_a_clear_error(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs, NO_ISOLATION)
    private = shared / "private"
    private.mkdir(mode=0o700)
    tool = private / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)

    async def scenario(stub: Any) -> tuple[str, str]:
        cwd = await expect_status(Status.FAILED_PRECONDITION,
                                  stub.StartJob(pb.StartJobRequest(argv=["/bin/true"],
                                                                   cwd=str(private))))  # fmt: skip
        program = await expect_status(Status.FAILED_PRECONDITION,
                                      stub.StartJob(pb.StartJobRequest(argv=[str(tool)])))
        return cwd, program

    cwd, program = daemon.run("client_1", scenario)
    assert f"working directory {str(private)!r} is not accessible (permission denied)" in cwd
    assert "(as nobody)" in cwd
    assert f"cannot execute {str(tool)!r}: permission denied (as nobody)" in program
    # The admin (root) may use both.
    out, _, final = daemon.run("client_0", lambda s: run_job(s, [str(tool)], cwd=str(private)))
    assert (out, final.result.exit_code) == ("hi\n", 0)


def test_a_key_others_can_read_stops_the_daemon(shared: Path, certs: Certs) -> None:
    certs.server.chmod(0o644)
    daemon = Daemon(certs, shared / "state", run_as="")
    refused = r"is accessible to others \(mode 0644\): run `chmod 600"
    with pytest.raises(RuntimeError, match=refused):
        daemon.start()


def test_sighup_reloads_the_accounts_for_new_jobs(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs, NO_ISOLATION)

    async def uid(stub: Any) -> str:
        out, err, final = await run_job(stub, ["/usr/bin/id", "-u"])
        assert final.result.exit_code == 0, err
        return out.strip()

    assert daemon.run("client_1", uid) == "65534"
    config = shared / "state.toml"
    config.write_text(config.read_text() + OWN_ACCOUNTS)
    daemon.signal(signal.SIGHUP)
    assert wait_until(lambda: any("reloaded identities and limits" in line for line in daemon.log))
    assert daemon.run("client_1", uid) == "61001"
    assert daemon.run("client_2", uid) == "61002"
