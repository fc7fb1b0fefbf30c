"""End to end: a `user` job runs under the default syscall filter, an admin's under none.

The daemon here runs user jobs as root (as most e2e tests do), so the filter alone stands
between the job and what it denies: the same calls succeed for an admin job. The workloads
run with the built-in accounts (nobody, read-only file system), as a real user's would.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Daemon, collect, make_certs, start
from jobd.launch import binary, private, seccomp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and accounts"),
    pytest.mark.skipif(binary.compiled() is None, reason="needs the jobd launcher (setup.py)"),
    pytest.mark.skipif(bool(seccomp.available()), reason=seccomp.available() or "-"),
]
TIMEOUT = 120.0

CALLS = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
calls = {"io_uring_setup": (425, 1, 0), "bpf": (321, 0, 0, 0), "keyctl": (250, 0, 0),
         "userfaultfd": (323, 0), "perf_event_open": (298, 0, 0, -1, -1, 0)}
for name, (number, *args) in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    print(name, ctypes.get_errno() if result == -1 else 0)
"""
EPERM = 1


async def run_job(stub: Any, argv: list[str], **kw: Any) -> tuple[str, str, Any]:
    job_id = await start(stub, argv, **kw)
    out, err, final, _ = await collect(stub, job_id)
    return out.decode(errors="replace"), err.decode(errors="replace"), final


def python_in_a_job() -> str:
    """A Python a job with a mount namespace can run: not under a private directory (a
    checkout in /tmp is hidden there)."""
    for candidate in ("/usr/bin/python3", os.path.realpath(sys.executable)):
        hidden = any(candidate == d or candidate.startswith(d + "/")
                     for d in private.find().directories)  # fmt: skip
        if os.access(candidate, os.X_OK) and not hidden:
            return candidate
    pytest.skip("needs a Python outside the private directories")


def test_the_kernels_least_hardened_calls_are_denied_to_a_user_job_only(daemon: Daemon) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the call numbers below are x86_64's")
    python = python_in_a_job()

    async def scenario(stub: Any) -> tuple[dict[str, int], Any]:
        out, err, final = await run_job(stub, [python, "-c", CALLS])
        assert final.result.exit_code == 0, err
        return {k: int(v) for k, v in (line.split() for line in out.splitlines())}, final

    user, final = daemon.run("client_1", scenario, TIMEOUT)
    admin, admin_final = daemon.run("client_0", scenario, TIMEOUT)
    assert set(user.values()) == {EPERM}, user
    assert EPERM not in admin.values(), admin  # the control: the filter's doing, not the kernel's
    assert final.syscall_filter == "default"
    assert admin_final.syscall_filter == "none"


@pytest.mark.parametrize("argv", [
    ["unshare", "-U", "-r", "id", "-u"],
    ["unshare", "-U", "-r", "-m", "sh", "-c", "mount -t tmpfs jobd-test /mnt && echo mounted"],
])  # fmt: skip
def test_a_user_job_cannot_be_root_in_a_user_namespace(daemon: Daemon, argv: list[str]) -> None:
    async def scenario(stub: Any) -> tuple[str, str, Any]:
        return await run_job(stub, argv)

    out, err, final = daemon.run("client_1", scenario, TIMEOUT)
    assert final.result.exit_code != 0 and "Operation not permitted" in err, (out, err)
    out, err, final = daemon.run("client_0", scenario, TIMEOUT)  # an admin's job, no filter
    assert final.result.exit_code == 0, err
    assert out in ("0\n", "mounted\n")


def test_jobctl_status_says_the_filter(daemon: Daemon) -> None:
    started = daemon.jobctl("client_1", "start", "--", "true")
    assert started.returncode == 0, started
    status = daemon.jobctl("client_1", "status", started.stdout.decode().strip())
    assert "Syscalls:  filter default\n" in status.stdout.decode(), status


# --- real work still runs --------------------------------------------------------------------


@pytest.fixture
def nobody_daemon(shared: Path) -> Iterator[Daemon]:
    certs_dir = shared / "certs"
    certs_dir.mkdir(mode=0o755)
    d = Daemon(make_certs(certs_dir), shared / "state", run_as="").start()
    try:
        yield d
    finally:
        code = d.stop()
    d.check_exit(code)


WORKLOADS = {
    "python threads and subprocesses": (
        ["/usr/bin/python3", "-c",
         "import threading, subprocess\n"
         "out = []\n"
         "ts = [threading.Thread(target=lambda: out.append(subprocess.run(['echo', 'hi'], "
         "capture_output=True).stdout)) for _ in range(4)]\n"
         "[t.start() for t in ts]; [t.join() for t in ts]\n"
         "print(len(out), out[0].decode().strip())"],
        "4 hi\n", ("/usr/bin/python3",)),
    "cc compiles and runs C": (
        ["sh", "-c", "cd /tmp && printf '#include <stdio.h>\\nint main(void){puts(\"built\");"
         "return 0;}\\n' > a.c && cc -o a a.c && ./a"],
        "built\n", ("cc",)),
    "make -j2": (
        ["sh", "-c", "cd /tmp && printf 'all: a b\\na:\\n\\t@echo a\\nb:\\n\\t@echo b\\n' > "
         "Makefile && make -j2 -s | sort"],
        "a\nb\n", ("make",)),
    "git init and commit": (
        ["sh", "-c", "cd /tmp && git init -q r && cd r && echo x > f && git add f && "
         "git -c user.name=t -c user.email=t@t commit -qm one && git log --format=%s"],
        "one\n", ("git",)),
    "tar and a pipeline": (
        ["sh", "-c", "cd /tmp && mkdir d && echo data > d/f && tar cf - d | tar tf - | sort "
         "| tr -d / | head -1"],
        "d\n", ("tar",)),
}


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_real_work_runs_in_a_user_job(nobody_daemon: Daemon, workload: str) -> None:
    argv, expected, tools = WORKLOADS[workload]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on this machine")

    async def scenario(stub: Any) -> tuple[str, str, Any]:
        return await run_job(stub, argv, env={"HOME": "/tmp"})

    out, err, final = nobody_daemon.run("client_1", scenario, TIMEOUT)
    assert (out, final.result.exit_code) == (expected, 0), err
    assert final.syscall_filter == "default" and final.run_as.startswith("nobody")
