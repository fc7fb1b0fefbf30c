"""Inside the test VM: install jobd as docs/operations.md tells an operator, run it as a
systemd service and drive it with jobctl. Each check prints one ``ok``/``FAIL`` line; the
exit status is the number of failures. Stdlib only: it runs on the guest's own python3
before jobd is installed.

Usage: operator_check.py SRC OUT   (the read-only checkout, the shared folder with dist/)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SRC, OUT = Path(sys.argv[1]), Path(sys.argv[2])
CGROUP = Path("/sys/fs/cgroup")
ETC = Path("/etc/jobd")
VENV = Path("/opt/jobd")
CONFIG = ETC / "jobd.toml"
BASE_CONFIG = f'cacert = "{ETC}/ca.crt"\ncert = "{ETC}/server.pem"\nlisten = "127.0.0.1:9090"\n'
failures: list[str] = []


def sh(*argv: str | Path, check: bool = True, timeout: float = 120,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {done.returncode}:\n"
                           f"{done.stdout}{done.stderr}")
    return done


def jobctl(*args: str, who: str = "client_0", check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBCTL_SERVER": "127.0.0.1:9090", "JOBCTL_CACERT": f"{ETC}/ca.crt",
           "JOBCTL_CERT": f"{ETC}/{who}.pem"}
    return sh("/usr/local/bin/jobctl", *args, check=check, timeout=timeout, env=env)


def status(job_id: str, who: str = "client_0") -> dict[str, Any]:
    job: dict[str, Any] = json.loads(jobctl("status", "--json", job_id, who=who).stdout)
    return job


def wait_ended(job_id: str, timeout: float = 60) -> dict[str, Any]:
    jobctl("status", "--watch", "--interval", "0.2", job_id, timeout=timeout)
    return status(job_id)


def show(prop: str) -> str:
    return sh("systemctl", "show", "-P", prop, "jobd").stdout.strip()


def check(name: str, test: Callable[[], str]) -> None:
    """Run one check; ``test`` returns what it saw, or raises to fail."""
    started = time.monotonic()
    try:
        seen = test()
    except Exception as exc:  # every failure becomes a FAIL line
        failures.append(name)
        print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        return
    print(f"ok   {name} ({time.monotonic() - started:.1f} s): {seen}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def job_group(job_id: str) -> Path:
    """The job's cgroup, from its process's /proc/PID/cgroup."""
    pid = status(job_id)["pid"]
    line = Path(f"/proc/{pid}/cgroup").read_text().strip()
    return CGROUP / line.split("::", 1)[1].lstrip("/")


def install() -> str:
    wheels = sorted((OUT / "dist").glob("jobd-*.whl"))
    expect(len(wheels) == 1, f"one jobd wheel in dist/, found {wheels}")
    sh(sys.executable, "-m", "venv", VENV)
    sh(VENV / "bin/pip", "install", "-q", "--no-index", "--find-links", OUT / "dist", wheels[0])
    launcher = next(VENV.glob("lib/python3*/site-packages/jobd/launch/jobd-launch"), None)
    expect(launcher is not None and os.access(launcher, os.X_OK),
           "the wheel carries the compiled launcher")
    for tool in ("jobd", "jobctl"):
        Path(f"/usr/local/bin/{tool}").symlink_to(VENV / "bin" / tool)
    # docs/operations.md's service install, with the listen address pinned to loopback.
    ETC.mkdir(mode=0o700)
    sh("sh", SRC / "ca/gen.sh", ETC)
    CONFIG.write_text(BASE_CONFIG)
    sh("install", "-D", "-m", "644", SRC / "jobd/systemd/jobd.service",
       "/etc/systemd/system/jobd.service")
    sh("systemctl", "daemon-reload")
    sh("systemctl", "enable", "--now", "jobd", timeout=60)
    expect(show("ActiveState") == "active", f"jobd is {show('ActiveState')}")
    return f"{wheels[0].name}; {show('StatusText')}"


def check_backend() -> str:
    text = sh("/usr/local/bin/jobd", "--check", "--config", CONFIG).stdout
    for controller in ("cpu", "memory", "io", "pids", "kill"):
        expect(re.search(rf"^\s+{controller}\s+available", text, re.M) is not None,
               f"{controller} not available:\n{text}")
    return "v2 with cpu, memory, io, pids, kill"


def delegated() -> str:
    service = CGROUP / show("ControlGroup").lstrip("/")
    job_id = jobctl("start", "--", "sleep", "300").stdout.strip()
    user_job = jobctl("start", "--", "sleep", "300", who="client_1").stdout.strip()
    try:
        groups = [job_group(job_id), job_group(user_job)]
        for group in groups:
            expect(service in group.parents, f"{group} is not below {service}")
        main_pid = show("MainPID")
        daemon_group = Path(f"/proc/{main_pid}/cgroup").read_text().strip()
        # Alone in the delegated group, jobd steps into a leaf so the group can hand down
        # controllers (v2's no-internal-processes rule).
        expect(daemon_group == f"0::{show('ControlGroup')}/daemon", f"jobd in {daemon_group}")
        for controller in ("cpu", "memory", "io", "pids"):
            for group in groups:
                expect(controller in (group / "cgroup.controllers").read_text().split(),
                       f"{controller} not enabled in {group}")
    finally:
        jobctl("stop", "--grace", "1", job_id)
        jobctl("stop", "--grace", "1", user_job, who="client_1")
    for group in groups:
        expect(not group.exists(), f"{group} left behind")
    return f"jobs in {groups[0].relative_to(service)} and {groups[1].relative_to(service)}; " \
           f"daemon in {daemon_group}"


def memory_limit() -> str:
    hog = ["perl", "-e", '$x = "x" x (400 * 1024 * 1024); sleep 1']
    job_id = jobctl("start", "--memory", "64M", "--", *hog).stdout.strip()
    job = wait_ended(job_id)
    shown = jobctl("status", job_id).stdout
    expect(job["result"]["outcome"] == "OUTCOME_OOM_KILLED", f"not OOM-killed:\n{shown}")
    expect(job["usage"]["oom_kills"] >= 1, f"no OOM kill counted:\n{shown}")
    return next(line.strip() for line in shown.splitlines() if "OOM" in line)


def pids_limit() -> str:
    script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; wait"
    done = jobctl("run", "--pids", "4", "--", "sh", "-c", script, check=False)
    expect("fork" in done.stderr.lower() or "resource temporarily" in done.stderr.lower(),
           f"no fork failure in stderr: {done.stderr!r}")
    return done.stderr.strip().splitlines()[0]


def cpu_limit() -> str:
    burn = ["perl", "-e", "my $t = time + 3; while (time < $t) {}"]
    job_id = jobctl("start", "--cpu", "0.2", "--", *burn).stdout.strip()
    job = wait_ended(job_id)
    used = job["usage"]["cpu_seconds"]
    # Unthrottled it takes ~3 s; the floor only says it ran (a loaded host may starve it).
    expect(0.05 <= used <= 0.9, f"cpu {used:.2f} s in ~3 s of wall at 0.2 cores")
    return f"{used:.2f} CPU-seconds in 3 s of wall at --cpu 0.2"


def io_limit() -> str:
    device = os.stat("/").st_dev
    dev = f"{os.major(device)}:{os.minor(device)}"
    data = Path("/var/tmp/jobd-io-check")
    with data.open("wb") as f:
        f.write(os.urandom(1 << 20) * 6)
    read = ["dd", f"if={data}", "of=/dev/null", "bs=1M", "iflag=direct"]
    try:
        started = time.monotonic()
        jobctl("run", "--", *read)
        free = time.monotonic() - started
        started = time.monotonic()
        jobctl("run", "--io-device", dev, "--io-read-bps", "1M", "--", *read)
        paced = time.monotonic() - started
    finally:
        data.unlink()
    expect(paced >= 3.5, f"6 MiB at 1 MiB/s took {paced:.1f} s")
    return f"6 MiB direct read: {free:.1f} s free, {paced:.1f} s at 1 MiB/s on {dev}"


def stop_kills_daemonized() -> str:
    marker = "4242.5"
    escape = f"setsid sh -c 'trap \"\" TERM HUP; exec sleep {marker}' </dev/null >/dev/null 2>&1 &"
    job_id = jobctl("start", "--", "sh", "-c", f"{escape} sleep 300").stdout.strip()
    group = job_group(job_id)
    deadline = time.monotonic() + 10
    grandchild = f"^sleep {re.escape(marker)}$"  # not the shells whose scripts name it
    while not (found := sh("pgrep", "-f", grandchild, check=False).stdout.split()):
        expect(time.monotonic() < deadline, "the daemonized grandchild never started")
        time.sleep(0.05)
    shown = jobctl("stop", "--grace", "1", job_id).stdout.strip()
    left = sh("pgrep", "-f", grandchild, check=False).stdout.split()
    expect(not left, f"grandchild {left} outlived the stop")
    expect(not group.exists(), f"{group} left behind")
    return f"grandchild {found[0]} (new session, ignores TERM) gone; {shown.splitlines()[0]}"


def reload() -> str:
    main_pid = show("MainPID")
    job_id = jobctl("start", "--", "sleep", "300", who="client_1").stdout.strip()
    CONFIG.write_text(BASE_CONFIG + '[identities]\nclient_0 = "admin"\n')
    try:
        sh("systemctl", "reload", "jobd", timeout=60)
        refused = jobctl("list", who="client_1", check=False)
        expect(refused.returncode != 0, "client_1 still served after its identity was removed")
        expect(show("MainPID") == main_pid, "reload restarted the daemon")
        expect(status(job_id)["state"] == "JOB_STATE_RUNNING",
               "the running job did not survive the reload")
    finally:
        CONFIG.write_text(BASE_CONFIG)
        sh("systemctl", "reload", "jobd", timeout=60)
    jobctl("list", who="client_1")  # back again
    jobctl("stop", "--grace", "1", job_id)
    return f"client_1 refused ({refused.stderr.strip().splitlines()[-1]}); job kept running"


def service_stop() -> str:
    service = CGROUP / show("ControlGroup").lstrip("/")
    job_id = jobctl("start", "--", "sh", "-c", "trap 'exit 7' TERM; sleep 300 & wait").stdout
    job_id = job_id.strip()
    pid = status(job_id)["pid"]
    started = time.monotonic()
    sh("systemctl", "stop", "jobd", timeout=120)
    took = time.monotonic() - started
    expect(not Path(f"/proc/{pid}").exists(), f"job process {pid} outlived the service")
    expect(not service.exists(), f"{service} left behind")
    sh("systemctl", "start", "jobd", timeout=60)
    job = status(job_id)
    result = next(line for line in jobctl("status", job_id).stdout.splitlines()
                  if line.startswith("Result"))
    # jobd, not systemd, ended it: SIGTERM with the grace period, so its trap ran.
    expect(job["result"]["outcome"] == "OUTCOME_STOPPED" and job["result"].get("exit_code") == 7,
           f"not stopped gracefully by jobd: {result}")
    return f"stopped in {took:.1f} s; the job's {result.split(None, 1)[1]}; group removed"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("jobd --check sees cgroup v2", check_backend),
    ("job groups below the delegated service group", delegated),
    ("--memory: OOM kill reported", memory_limit),
    ("--pids: forks refused", pids_limit),
    ("--cpu 0.2 throttles", cpu_limit),
    ("--io-read-bps paces a direct read", io_limit),
    ("stop kills a daemonized grandchild", stop_kills_daemonized),
    ("systemctl reload", reload),
    ("systemctl stop", service_stop),
]


def main() -> int:
    check("install wheel, start the service", install)
    if failures:  # nothing else can run
        print(sh("journalctl", "-u", "jobd", "--no-pager", check=False).stdout)
        return 1
    for name, test in CHECKS:
        check(name, test)
    if failures:
        print(sh("journalctl", "-u", "jobd", "--no-pager", "-n", "80", check=False).stdout)
    total = len(CHECKS) + 1
    print(f"operator checks: {total - len(failures)} passed, {len(failures)} failed", flush=True)
    return len(failures)


if __name__ == "__main__":
    sys.exit(main())
