"""See the file system as a job's account would, without touching the rest of the daemon.

Before a job runs as another user, its working directory and program are checked with that
user's rights, so a forbidden one is a clear error rather than a job that dies in exec. The
kernel's own check is the only exact one (modes, ACLs, security modules), so the calling thread
takes on the account's ids for the length of the check, through the raw system calls: glibc's
``setresuid`` would switch every thread of the daemon at once, while the kernel keeps
credentials per thread. The saved user id stays 0, which is what lets the thread switch back.

Where these calls are not known (another architecture) or the daemon is not root, the check
runs with the daemon's own rights.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator

from jobd.accounts import Account

# (setgroups, setresuid, setresgid) per architecture: the numbers are the kernel's ABI.
_SYSCALLS = {
    "x86_64": (116, 117, 119),
    "aarch64": (159, 147, 149),
}
_KEEP = -1  # "leave this id as it is"

_libc = ctypes.CDLL(None, use_errno=True)


def available() -> bool:
    return platform.machine() in _SYSCALLS and os.geteuid() == 0


def _call(number: int, *args: object) -> None:
    if _libc.syscall(number, *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _set(numbers: tuple[int, int, int], uid: int, gid: int, groups: tuple[int, ...]) -> None:
    setgroups, setresuid, setresgid = numbers
    array = (ctypes.c_uint * max(len(groups), 1))(*groups)
    _call(setgroups, ctypes.c_long(len(groups)), array)
    _call(setresgid, ctypes.c_long(gid), ctypes.c_long(gid), ctypes.c_long(_KEEP))
    _call(setresuid, ctypes.c_long(uid), ctypes.c_long(uid), ctypes.c_long(_KEEP))


@contextlib.contextmanager
def seen_by(account: Account) -> Iterator[None]:
    """Run the block with ``account``'s ids on this thread only; the daemon's own ids are
    back when it ends. Without the means (see the module doc) the block runs unchanged."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or os.geteuid() != 0 or account.uid == 0:
        yield
        return
    uid, gid, groups = os.getuid(), os.getgid(), tuple(os.getgroups())
    try:
        _set(numbers, account.uid, account.gid, account.groups)
        yield
    finally:
        try:
            # The uid first: regaining root is what allows setting the groups back.
            _call(numbers[1], ctypes.c_long(uid), ctypes.c_long(uid), ctypes.c_long(_KEEP))
            _set(numbers, uid, gid, groups)
        except OSError as exc:  # cannot happen with a saved uid of 0; never go on half-switched
            os.write(2, f"jobd: cannot restore the daemon's user ids: {exc}\n".encode())
            os.abort()
