"""What this host lets the launcher do: run it once at start with everything a job may need.

The probe is the real thing: the compiled launcher with every namespace, the read-only file
system and the private directories, running /bin/true. If that fails, each namespace is tried
alone and the read-only file system with a mount namespace alone, so ``jobd --check`` can say
which part does not work and why (the launcher's own report, as a job would get it).
"""

from __future__ import annotations

import os
import subprocess

from jobd.launch import binary, seccomp
from jobd.launch.plan import Plan, launcher_argv
from jobd.launch.status import failure_message, parse
from jobd.launch.system import SYSTEM_PATH
from jobd.model.namespaces import ALL, ORDER, Namespace
from jobd.policy.isolation import Availability
from jobd.policy.syscalls import FilterSpec

PROBE_TIMEOUT = 10.0


def probe(launcher: str, namespaces: frozenset[Namespace], *, read_only: bool = False,
          private_dirs: tuple[str, ...] = (), filter_fd: int | None = None) -> str:
    """Run the launcher with ``namespaces`` once: "" if it works, else why not."""
    plan = Plan(namespaces=namespaces, hostname="jobd-probe", read_only=read_only,
                private_dirs=private_dirs, tmpfs_size=1 << 20, cwd="/",
                search_path=SYSTEM_PATH, filter_fd=filter_fd)  # fmt: skip
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    passed = (status_w,) if filter_fd is None else (status_w, filter_fd)
    try:
        try:
            done = subprocess.run(
                launcher_argv(launcher, plan, status_w, ["true"]), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PATH": SYSTEM_PATH},
                cwd="/", pass_fds=passed, timeout=PROBE_TIMEOUT,
            )  # fmt: skip
        finally:
            os.close(status_w)
        with os.fdopen(status_r, "rb", closefd=False) as status:
            report = status.read()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        os.close(status_r)
    if report:
        return failure_message(parse(report), "true", "/")
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"
    return ""


def detect(private_dirs: tuple[str, ...] = ()) -> Availability:
    """What works here: all at once (one run, the usual case), else one part at a time."""
    launcher = binary.compiled()
    if launcher is None:
        why = binary.NOT_BUILT
        return Availability(reasons=dict.fromkeys(ORDER, why), read_only_reason=why,
                            seccomp_reason=why)  # fmt: skip
    if os.geteuid() != 0:
        why = "making namespaces needs root: jobd does not run as root"
        return Availability(reasons=dict.fromkeys(ORDER, why), read_only_reason=why,
                            seccomp_reason=seccomp_probe(launcher))  # fmt: skip
    filter_fd, seccomp_reason = _default_filter()
    try:
        if not probe(launcher, ALL, read_only=True, private_dirs=private_dirs,
                     filter_fd=filter_fd) and filter_fd is not None:  # fmt: skip
            return Availability(ALL, read_only=True, read_only_reason="", seccomp_reason="")
        reasons = {ns: probe(launcher, frozenset({ns}), private_dirs=private_dirs)
                   for ns in ORDER}  # fmt: skip
        read_only = probe(launcher, frozenset({Namespace.MOUNT}), read_only=True)
        if filter_fd is not None:
            seccomp_reason = probe(launcher, frozenset(), filter_fd=filter_fd)
    finally:
        if filter_fd is not None:
            os.close(filter_fd)
    return Availability(
        frozenset(ns for ns, why in reasons.items() if not why),
        {ns: why for ns, why in reasons.items() if why},
        read_only=not read_only,
        read_only_reason=read_only,
        seccomp_reason=seccomp_reason,
    )


def _default_filter() -> tuple[int | None, str]:
    """The default filter on a memfd, or None and why it cannot be built."""
    try:
        return seccomp.sealed(seccomp.build(FilterSpec(), True)), ""
    except seccomp.SeccompError as exc:
        return None, str(exc)


def seccomp_probe(launcher: str) -> str:
    """Whether the launcher installs the default filter here: "" if so, else why not."""
    filter_fd, why = _default_filter()
    if filter_fd is None:
        return why
    try:
        return probe(launcher, frozenset(), filter_fd=filter_fd)
    finally:
        os.close(filter_fd)
