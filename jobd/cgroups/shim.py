"""The shim: a job's first process, which joins the job's cgroups and then execs the command.

The daemon spawns through Python's vfork path, which cannot run code in the child between fork
and exec (``preexec_fn`` would force fork(), ~70 ms from a large daemon). So the child first
runs a shim that writes its own pid into every ``cgroup.procs`` of the job and then execs the
command: the command's first instruction already runs inside, and no descendant can escape.

Two shims do the same. ``jobd-shim``, built from ``shim.c`` at install (setup.py) for x86_64,
is freestanding: spawning /bin/true through it costs ~0.2 ms more than spawning it directly on
this project's 2-core VM, against ~0.6 ms through ``/bin/sh``, which maps its loader and libc
and probes the CPU on the way. The ``/bin/sh`` shim remains wherever the compiled one was not
built or does not run; it finds the command again on ``PATH`` and runs nothing but an ELF or a
``#!`` file only because the supervisor checked the format first.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jobd.system import SHELL

log = logging.getLogger(__name__)

COMPILED = Path(__file__).with_name("jobd-shim")
TRUE = "/bin/true"
TRIAL_TIMEOUT = 10.0
# Joins every cgroup given before "--", then becomes the command ("$@" keeps argv[0] as
# given and is looked up in the job's PATH, as the daemon already did). 125 when a group
# cannot be joined, as with the compiled shim.
SH_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
JOIN_FAILED = 125


@functools.cache
def compiled() -> str | None:
    """The compiled shim's path if it was built and works here, else None. Tried once, on a
    file of its own (~1 ms): it must write its pid there and exec /bin/true."""
    if not os.access(COMPILED, os.X_OK):
        return None
    with tempfile.TemporaryDirectory(prefix="jobd-shim-trial-") as tmp:
        procs = Path(tmp, "cgroup.procs")
        procs.touch()
        try:
            trial = subprocess.Popen([str(COMPILED), str(procs), "--", TRUE, "true"], env={},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        except OSError as exc:
            log.warning("cgroup shim: %s does not run (%s); using %s", COMPILED, exc, SHELL)
            return None
        try:
            _, stderr = trial.communicate(timeout=TRIAL_TIMEOUT)
        except subprocess.TimeoutExpired:
            trial.kill()
            trial.communicate()
            log.warning("cgroup shim: %s did not finish its trial run in %s s; using %s",
                        COMPILED, TRIAL_TIMEOUT, SHELL)
            return None
        joined = procs.read_text()
    if trial.returncode != 0 or joined != f"{trial.pid}\n":
        log.warning("cgroup shim: %s failed its trial run (exit %s, wrote %r: %s); using %s",
                    COMPILED, trial.returncode, joined,
                    stderr.decode(errors="replace").strip(), SHELL)
        return None
    return str(COMPILED)


def describe() -> str:
    """One line for ``jobd --check``."""
    binary = compiled()
    if binary is not None:
        return f"cgroup shim: {binary}"
    return f"cgroup shim: {SHELL} (the compiled shim was not built or does not run here)"


def shim_command(
    procs_files: Sequence[Path], executable: str, argv: Sequence[str]
) -> tuple[str, list[str]]:
    """The executable and argv that join every group in ``procs_files`` and then exec
    ``executable`` with ``argv``. The ``/bin/sh`` shim execs ``argv[0]`` as found on the
    child's PATH instead, so ``executable`` must be what that finds."""
    binary = compiled()
    groups = [str(p) for p in procs_files]
    if binary is not None:
        return binary, [binary, *groups, "--", executable, *argv]
    return SHELL, [SHELL, "-c", SH_SCRIPT, "jobd-shim", *groups, "--", *argv]
