"""The syscall filter a job runs under: which calls it denies, built with libseccomp.

The daemon builds each filter once (at start, and on SIGHUP) with libseccomp, the library
Docker, systemd and podman use, and hands the compiled BPF program to every job's launcher on
a sealed memfd; the launcher installs it last, after the job dropped its privileges and just
before the command's exec (see ``launch.c``). libseccomp is reached through ctypes: the six
calls below are all jobd needs, and the library (``libseccomp.so.2``) is on every Debian and
systemd host.

The ``default`` filter denies, with EPERM, what Docker's default profile denies an
unprivileged container and what most container escapes of recent years went through: new user
namespaces (``unshare``/``clone`` with CLONE_NEWUSER, ``setns``), mounting, io_uring, bpf,
userfaultfd, perf_event_open, the kernel keyrings, module and kexec loading, swap, reboot,
accounting, quotas, ``open_by_handle_at``, the kernel log, and ``personality`` beyond the safe
values; ``clone3`` answers ENOSYS, as in Docker, so that libc falls back to ``clone``, whose
flags a filter can read. ``ptrace`` (and ``process_vm_*``) is denied only to a job without a
PID namespace: in one, the job can name only its own processes, which run as its own account,
so debuggers keep working. A call of another architecture's ABI (the 32-bit ``int 0x80`` on
x86_64, x32) kills the process.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Iterable

from jobd.policy.syscalls import FilterSpec

LIBRARY = "libseccomp.so.2"

# libseccomp's constants (seccomp.h): actions, the attribute for a foreign architecture, and
# the comparison jobd uses.
ACT_ALLOW = 0x7FFF0000
ACT_KILL_PROCESS = 0x80000000
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_OPTIMIZE = 8  # 2: a binary tree of the calls, not a list (libseccomp 2.5+)
CMP_MASKED_EQ = 7


def act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


CLONE_NEWUSER = 0x10000000
# personality(2): what a job may set (PER_LINUX, PER_LINUX32, UNAME26 and both; and the query
# 0xffffffff). Any other bit (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, another type, ...) is EPERM.
PERSONALITY_SAFE_BITS = 0x0008 | 0x20000

class SeccompError(Exception):
    """The filter cannot be built: libseccomp is missing, or a name is unknown."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]  # fmt: skip


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        raise SeccompError(f"{LIBRARY} (libseccomp) not found: {exc}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def available() -> str:
    """"" when filters can be built here, else why not."""
    try:
        _lib()
    except SeccompError as exc:
        return str(exc)
    return ""


def syscall_number(name: str) -> int:
    """The native number of ``name``; SeccompError naming it if libseccomp knows no such call."""
    number = _lib().seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        raise SeccompError(f"unknown system call {name!r}")
    return int(number)


def check(spec: FilterSpec) -> None:
    """SeccompError for a name libseccomp does not know (at start, not at a job's)."""
    for name in (*spec.deny, *spec.allow):
        syscall_number(name)


def build(spec: FilterSpec, pid_namespace: bool) -> bytes:
    """The compiled BPF program (native architecture) for ``spec``."""
    lib = _lib()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise SeccompError("seccomp_init failed")
    try:
        _check(lib.seccomp_attr_set(ctx, FLTATR_ACT_BADARCH, ACT_KILL_PROCESS), "badarch")
        lib.seccomp_attr_set(ctx, FLTATR_CTL_OPTIMIZE, 2)  # older libseccomp: a list, still right
        eperm = act_errno(errno.EPERM)
        for name in spec.names(pid_namespace):
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                if name in spec.deny:
                    raise SeccompError(f"unknown system call {name!r}")
                continue  # an old call this architecture never had (create_module on arm64)
            _rule(lib, ctx, eperm, number, [])
        if "clone3" not in spec.allow:
            _rule(lib, ctx, act_errno(errno.ENOSYS), syscall_number("clone3"), [])
        for name in ("unshare", "clone"):
            if name not in spec.allow:
                user_ns = _ArgCmp(0, CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)
                _rule(lib, ctx, eperm, syscall_number(name), [user_ns])
        if "personality" not in spec.allow:
            for mask, value in personality_denials():
                _rule(lib, ctx, eperm, syscall_number("personality"),
                      [_ArgCmp(0, CMP_MASKED_EQ, mask, value)])  # fmt: skip
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


TOP = 0xF0000000  # no personality flag lives here: only the query sets these bits


def personality_denials() -> Iterable[tuple[int, int]]:
    """(mask, value) pairs, one rule each (libseccomp takes one comparison per argument):
    personality(arg) is denied when ``arg & mask == value`` for any of them. What passes is
    exactly the safe values and the query, 0xffffffff."""
    for bit in (1 << n for n in range(28)):
        if not bit & PERSONALITY_SAFE_BITS:
            yield TOP | bit, bit  # an unsafe flag, in a value that is not the query
        yield TOP | bit, TOP  # a "query" that is not all ones: a flag hidden behind the top
    for top in range(1, 15):
        yield TOP, top << 28  # the top bits neither all clear nor all set


def _rule(lib: ctypes.CDLL, ctx: int, action: int, number: int, args: list[_ArgCmp]) -> None:
    array = (_ArgCmp * max(len(args), 1))(*args)
    _check(lib.seccomp_rule_add_array(ctx, action, number, len(args), array), f"rule {number}")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("jobd-seccomp", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "export")
        return os.pread(fd, os.fstat(fd).st_size, 0)  # a memfd gives it all in one read
    finally:
        os.close(fd)


def _check(result: int, what: str) -> None:
    if result < 0:
        raise SeccompError(f"libseccomp: {what}: {os.strerror(-result)}")


def sealed(program: bytes) -> int:
    """A read-only memfd holding ``program``, for the launcher's ``-f`` (close-on-exec in the
    daemon; the spawn passes it on). Sealed: nothing can change it once written."""
    fd = os.memfd_create("jobd-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, program)
        seals = (getattr(os, "F_SEAL_SEAL", 1) | getattr(os, "F_SEAL_SHRINK", 2)
                 | getattr(os, "F_SEAL_GROW", 4) | getattr(os, "F_SEAL_WRITE", 8))  # fmt: skip
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_ADD_SEALS", 1033), seals)
    except BaseException:
        os.close(fd)
        raise
    return fd
