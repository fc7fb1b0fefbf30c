"""The innermost links of the spawn chain of a job that runs as another account.

The daemon keeps its vfork spawn path (``preexec_fn``, ``user=`` and ``group=`` would force
fork()): util-linux ``setpriv`` drops the privileges, last in the chain, after the cgroup shim
and the namespaces were made as root::

    setpriv --reuid UID --regid GID --groups G,... | --clear-groups \
        --no-new-privs --inh-caps -all --bounding-set -all -- [LOADER] COMMAND...

``--no-new-privs`` keeps set-user-id programs from handing root back; the empty bounding set
keeps capabilities from coming back by any other way.

Everything before ``setpriv`` runs as root, so it must not see what a client put in the job's
environment (``LD_PRELOAD`` would load the client's code into root's helpers). It runs with
the daemon's minimal environment, and each requested variable travels under a prefixed name no
program reads (``JOBD_ENV_NAME``). The LOADER, a ``/bin/sh`` run as the job's account, gives
the variables their names back and execs the command; it is only there when the request set
any variable. Values never appear on a command line (``/proc/PID/cmdline`` is world-readable;
the environment is not).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Mapping

from jobd.accounts import Account
from jobd.system import SHELL, SYSTEM_PATH

PREFIX = "JOBD_ENV_"
# What a job's environment variable may be called: what a shell can pass on (the cgroup shim
# and the loader are shells, and a shell drops any other name from the environment).
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@functools.cache
def find_setpriv() -> str | None:
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), SYSTEM_PATH) if p)
    return shutil.which("setpriv", path=search)


def setpriv_args(setpriv: str, account: Account) -> list[str]:
    groups = (["--groups", ",".join(map(str, account.groups))] if account.groups
              else ["--clear-groups"])  # fmt: skip
    return [
        setpriv, "--reuid", str(account.uid), "--regid", str(account.gid), *groups,
        "--no-new-privs", "--inh-caps", "-all", "--bounding-set", "-all", "--",
    ]  # fmt: skip


def hidden_environment(base: Mapping[str, str], requested: Mapping[str, str]) -> dict[str, str]:
    """What the root part of the chain gets: ``base`` and the request under prefixed names."""
    env = dict(base)
    env.update((PREFIX + name, value) for name, value in requested.items())
    return env


def loader(names: list[str]) -> list[str]:
    """``/bin/sh -c SCRIPT`` that restores ``names`` from their prefixed copies and execs the
    rest of its arguments (names are checked against NAME when the job is validated)."""
    hidden = [PREFIX + name for name in names]
    # All words are expanded before export runs, so NAME=... cannot clobber a value still
    # to be read; only prefixed copies that are not themselves requested names are unset.
    exports = " ".join(f'{name}="${{{PREFIX}{name}}}"' for name in names)
    stale = sorted(set(hidden) - set(names))
    script = f"export {exports}\n" + (f"unset {' '.join(stale)}\n" if stale else "")
    return [SHELL, "-c", script + 'exec "$@"', "jobd-env"]
