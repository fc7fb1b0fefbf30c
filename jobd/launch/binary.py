"""The compiled launcher: where it is, whether it works here, and what ``--check`` says of it.

``jobd-launch`` is built from ``launch.c`` at install (setup.py). Where it was not built (no C
compiler) jobs that need nothing but cgroups start through a ``/bin/sh`` stand-in, and jobs
that need namespaces or another account cannot start: FAILED_PRECONDITION says why.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

COMPILED = Path(__file__).with_name("jobd-launch")
TRUE = "/bin/true"
TRIAL_TIMEOUT = 10.0
NOT_BUILT = "the jobd launcher (jobd-launch) was not built or does not run here"


@functools.cache
def compiled() -> str | None:
    """The launcher's path if it was built and works here, else None. Tried once (~1 ms): it
    must join a cgroup.procs file of its own, report nothing on its status pipe and exec
    /bin/true."""
    if not os.access(COMPILED, os.X_OK):
        return None
    with tempfile.TemporaryDirectory(prefix="jobd-launch-trial-") as tmp:
        procs = Path(tmp, "cgroup.procs")
        procs.touch()
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        try:
            trial = subprocess.Popen(
                [str(COMPILED), "-s", str(status_w), "-c", str(procs), "-p", "/bin", "--",
                 "true"],
                env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, pass_fds=(status_w,), cwd="/",
            )  # fmt: skip
        except OSError as exc:
            log.warning("launcher: %s does not run (%s)", COMPILED, exc)
            return None
        finally:
            os.close(status_w)
        try:
            _, stderr = trial.communicate(timeout=TRIAL_TIMEOUT)
        except subprocess.TimeoutExpired:
            trial.kill()
            trial.communicate()
            log.warning("launcher: %s did not finish its trial run in %s s", COMPILED,
                        TRIAL_TIMEOUT)
            return None
        finally:
            with os.fdopen(status_r, "rb") as status:
                report = status.read()
        joined = procs.read_text()
    if trial.returncode != 0 or joined != f"{trial.pid}\n" or report:
        log.warning("launcher: %s failed its trial run (exit %s, wrote %r, reported %r: %s)",
                    COMPILED, trial.returncode, joined, report,
                    stderr.decode(errors="replace").strip())
        return None
    return str(COMPILED)


def describe() -> str:
    """One line for ``jobd --check`` and the start-up log."""
    binary = compiled()
    if binary is not None:
        return f"launcher: {binary}"
    return (f"launcher: NOT AVAILABLE ({NOT_BUILT}): jobs join their cgroups through /bin/sh, "
            "and jobs that need namespaces or another account cannot start")
