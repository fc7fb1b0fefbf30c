"""Boot a User-Mode Linux VM with cgroup v2 and systemd, and run jobd's tests inside it.

The guest runs Debian's 6.1 UML kernel on a Debian bookworm image that ``image.sh`` builds
(cached in ``.vm/`` and rebuilt when the recipe or the pinned test packages change). It mounts
this checkout read-only and ``.vm/run`` read-write over hostfs and runs ``guest.sh``: the
cgroup, isolation, run-as and limits tests as root, then ``operator_check.py`` against jobd
installed from a wheel as a systemd service. The exit status is non-zero unless everything
passed and no test that needs cgroup v2 was skipped.

Usage: python tests/vm/run.py [PYTEST_ARGS...]   (default: the test files in GUEST_TESTS)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".vm"
RUN = CACHE / "run"
HERE = Path(__file__).resolve().parent
TOOLS = {"linux.uml": "user-mode-linux", "debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs"}
GUEST_TESTS = [
    "tests/unit/cgroups", "tests/e2e/test_cgroups_e2e.py", "tests/unit/policy/test_ceilings.py",
    "tests/unit/policy/test_limits.py", "tests/unit/policy/test_isolation.py",
    "tests/e2e/test_isolation_e2e.py", "tests/e2e/test_containment_e2e.py",
    "tests/unit/launch/test_run_as.py", "tests/e2e/test_run_as_e2e.py",
    "tests/e2e/test_seccomp_e2e.py", "tests/unit/launch/test_launch.py",
]
# A skip whose reason says this means the guest lacked what it exists to provide.
MUST_NOT_SKIP = ("needs root and cgroups", "backend; this one is none")
BOOT_TIMEOUT = 120.0  # to guest.sh's first line; a rare UML boot hangs silently
RUN_TIMEOUT = 1200.0
MEMORY = "2G"


def log(message: str) -> None:
    print(f"vm: {message}", flush=True)


def missing_tools() -> list[str]:
    return [package for tool, package in TOOLS.items() if shutil.which(tool) is None]


def pinned_requirements() -> str:
    """What this interpreter's environment has installed (less jobd itself), so the guest
    tests with exactly the versions the host does."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout
    keep = [line for line in frozen.splitlines() if line and not line.startswith("jobd")]
    return "\n".join(sorted(keep, key=str.lower)) + "\n"


def image() -> Path:
    """The cached image for this recipe, built first if missing."""
    requirements = pinned_requirements()
    recipe = (HERE / "image.sh").read_bytes() + requirements.encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    path = CACHE / f"image-{key}.ext4"
    if path.exists():
        log(f"image {path.name} (cached)")
        return path
    started = time.monotonic()
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    (wheels / "requirements.txt").write_text(requirements)
    log("filling the wheelhouse for the guest's test venv")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", wheels,
                    "-r", wheels / "requirements.txt"], check=True)
    log(f"building {path.name} with image.sh (debootstrap bookworm)")
    subprocess.run(["sh", HERE / "image.sh", path, wheels, wheels / "requirements.txt"],
                   check=True)
    for old in CACHE.glob("image-*.ext4"):
        if old != path:
            old.unlink()
    log(f"image built in {time.monotonic() - started:.0f} s")
    return path


def prepare_run(pytest_args: list[str]) -> None:
    """A fresh shared folder: the wheels an operator installs, and what pytest runs."""
    shutil.rmtree(RUN, ignore_errors=True)
    (RUN / "dist").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", RUN / "dist", ROOT],
                   check=True)
    (RUN / "pytest.args").write_text("".join(f"{arg}\n" for arg in pytest_args or GUEST_TESTS))


def boot(disk: Path) -> int | None:
    """One boot; the kernel's exit status, or None when it never reached guest.sh."""
    cow = RUN / "disk.cow"
    cow.unlink(missing_ok=True)
    console = RUN / "console.log"
    argv = [
        "linux.uml", f"mem={MEMORY}", f"ubd0={cow},{disk}", "root=/dev/ubda", "rw",
        "init=/lib/systemd/systemd", "systemd.unified_cgroup_hierarchy=1",
        "systemd.firstboot=off", "cgroup_no_v1=all", "systemd.show_status=false",
        f"jobdvm.src={ROOT}", f"jobdvm.out={RUN}", "con=null", "con0=null,fd:1",
    ]
    guest_log = RUN / "guest.log"
    with console.open("wb") as out:
        # UML keeps its RAM in a file under TMPDIR: tmpfs, not the disk.
        env = {**os.environ, "TMPDIR": "/dev/shm"}
        kernel = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            started = time.monotonic()
            while kernel.poll() is None:
                waited = time.monotonic() - started
                if not guest_log.exists() and waited > BOOT_TIMEOUT:
                    log(f"no sign of guest.sh after {BOOT_TIMEOUT:.0f} s: boot hung")
                    return None
                if waited > RUN_TIMEOUT:
                    log(f"the guest ran past {RUN_TIMEOUT:.0f} s: stopped")
                    return -1
                time.sleep(0.5)
            return kernel.returncode
        finally:
            if kernel.poll() is None:
                os.killpg(kernel.pid, signal.SIGKILL)
                kernel.wait()
            cow.unlink(missing_ok=True)


def verdict() -> list[str]:
    """What went wrong, from the files guest.sh left; empty when all passed."""
    problems = []
    for part in ("pytest", "operator"):
        rc = RUN / f"{part}.rc"
        if not rc.exists():
            problems.append(f"{part} did not finish")
        elif rc.read_text().strip() != "0":
            problems.append(f"{part} exited {rc.read_text().strip()}")
    report = RUN / "pytest.xml"
    if report.exists():
        for case in ET.parse(report).iter("testcase"):
            skipped = case.find("skipped")
            reason = "" if skipped is None else skipped.get("message", "")
            if any(sign in reason for sign in MUST_NOT_SKIP):
                problems.append(f"skipped in the VM: {case.get('name')}: {reason}")
    return problems


def main() -> int:
    if os.geteuid() != 0:
        log("needs root (debootstrap, and the guest's tests run as its root)")
        return 2
    if missing := missing_tools():
        log(f"missing host tools; install Debian's: {' '.join(missing)}")
        return 2
    disk = image()
    prepare_run(sys.argv[1:])
    started = time.monotonic()
    for attempt in (1, 2):
        status = boot(disk)
        if status is not None:
            break
        log(f"boot attempt {attempt} hung; console tail:")
        print((RUN / "console.log").read_text(errors="replace")[-2000:])
    log(f"guest finished in {time.monotonic() - started:.0f} s")
    guest_log = RUN / "guest.log"
    if guest_log.exists():
        print(guest_log.read_text(errors="replace"), end="", flush=True)
    else:
        print((RUN / "console.log").read_text(errors="replace")[-4000:])
    problems = verdict()
    for problem in problems:
        log(f"FAILED: {problem}")
    if not problems:
        log("passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
