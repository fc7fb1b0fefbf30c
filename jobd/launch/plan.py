"""What a job's first process is to do, as data, and the command line that says it.

Pure: no I/O. The supervisor fills a :class:`Plan` from the job, its policy and its cgroup;
:func:`build_chain` turns it into what is spawned: the compiled launcher's command line (see
``launch.c``, :func:`launcher_argv`), or where the launcher was not built the ``/bin/sh``
stand-in (:func:`fallback_argv`), which can do only what needs no namespace and no other
account, or the command itself when there is nothing to do first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobd.launch.system import SHELL
from jobd.model.errors import SpawnFailed
from jobd.model.namespaces import Namespace
from jobd.policy.accounts import Account

# The kernel's CLONE_NEW* flags, as unshare(2) takes them.
CLONE_FLAGS = {
    Namespace.MOUNT: 0x00020000,
    Namespace.UTS: 0x04000000,
    Namespace.IPC: 0x08000000,
    Namespace.PID: 0x20000000,
    Namespace.NETWORK: 0x40000000,
}
# Namespaces whose set-up mounts something (/proc, /sys): they need a mount namespace.
MOUNTING = frozenset({Namespace.PID, Namespace.MOUNT, Namespace.NETWORK})
# The exit codes of a launch that failed before the command ran, as a shell's.
SETUP_FAILED, CANNOT_EXECUTE, NOT_FOUND = 125, 126, 127


@dataclass(frozen=True)
class Plan:
    """One job's launch. ``account`` None: the job keeps the daemon's own account."""

    procs_files: tuple[str, ...] = ()
    oom_score_adj: int | None = None
    namespaces: frozenset[Namespace] = frozenset()
    hostname: str = ""
    # With a mount namespace: the whole file system read-only (and a minimal /dev), but for
    # ``writable``; ``private_dirs`` get an empty tmpfs each, of ``tmpfs_size`` bytes.
    read_only: bool = False
    writable: tuple[str, ...] = ()
    private_dirs: tuple[str, ...] = ()
    tmpfs_size: int | None = None
    account: Account | None = None
    cwd: str = "/"
    search_path: str = ""
    filter_fd: int | None = None

    @property
    def has_init(self) -> bool:
        """Whether the command runs under the launcher's init (PID 1 of its namespace)."""
        return Namespace.PID in self.namespaces

    @property
    def needs_launcher(self) -> bool:
        """What only the compiled launcher can do: namespaces, another account, a filter."""
        return bool(self.namespaces) or self.account is not None or self.filter_fd is not None


def unshare_flags(namespaces: frozenset[Namespace]) -> int:
    flags = 0
    for ns in namespaces:
        flags |= CLONE_FLAGS[ns]
    if namespaces & MOUNTING:
        flags |= CLONE_FLAGS[Namespace.MOUNT]
    return flags


def launcher_argv(binary: str, plan: Plan, status_fd: int, argv: Sequence[str]) -> list[str]:
    """The compiled launcher's command line for ``plan``, then ``argv`` after ``--``."""
    words = [binary, "-s", str(status_fd)]
    for procs in plan.procs_files:
        words += ["-c", procs]
    if plan.oom_score_adj is not None:
        words += ["-o", str(plan.oom_score_adj)]
    ns = plan.namespaces
    if ns:
        words += ["-n", str(unshare_flags(ns))]
    if Namespace.UTS in ns and plan.hostname:
        words += ["-h", plan.hostname]
    if Namespace.NETWORK in ns:
        words += ["-L", "-S"]  # loopback up; a /sys of the job's own network namespace
    if Namespace.PID in ns:
        words.append("-P")  # a /proc of the job's own PID namespace
    if Namespace.MOUNT in ns:
        if plan.read_only:
            words += ["-R", "-D"]
            for path in plan.writable:
                words += ["-w", path]
        for directory in plan.private_dirs:
            words += ["-t", directory]
        if plan.tmpfs_size is not None:
            words += ["-z", str(plan.tmpfs_size)]
    if plan.account is not None:
        words += ["-u", str(plan.account.uid), "-g", str(plan.account.gid)]
        if plan.account.groups:
            words += ["-G", ",".join(map(str, plan.account.groups))]
    words += ["-d", plan.cwd, "-p", plan.search_path]
    if plan.filter_fd is not None:
        words += ["-f", str(plan.filter_fd)]
    return [*words, "--", *argv]


# Sets the OOM score ("$1", if any), joins every group given before "--", then becomes the
# command ("$@" is looked up on the job's PATH by the shell, which runs a file of no known format
# as a script: a limit of the stand-in, which the README names).
SH_SCRIPT = (
    'if [ -n "$1" ]; then echo "$1" > /proc/self/oom_score_adj || exit 125; fi; shift; '
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)


def fallback_argv(plan: Plan, argv: Sequence[str]) -> list[str]:
    """The ``/bin/sh`` stand-in's command line; only for a plan that needs no launcher."""
    assert not plan.needs_launcher
    oom = "" if plan.oom_score_adj is None else str(plan.oom_score_adj)
    return [SHELL, "-c", SH_SCRIPT, "jobd-shim", oom, *plan.procs_files, "--", *argv]


# What build_chain says when a plan needs the launcher and it was not built.
NEEDS_LAUNCHER = "this job needs namespaces or another account, and {why}"


@dataclass(frozen=True)
class Chain:
    """What to spawn for one job: ``argv`` run as ``executable`` (None: looked up on the
    ``env``'s PATH) in ``cwd``. ``reports``: it writes to the status pipe (the launcher);
    ``keep_fds``: descriptors it inherits besides the standard ones (the filter's)."""

    argv: tuple[str, ...]
    executable: str | None
    env: Mapping[str, str]
    cwd: str
    reports: bool = False
    keep_fds: tuple[int, ...] = ()


def build_chain(
    plan: Plan, argv: Sequence[str], env: Mapping[str, str], launcher: str | None,
    status_fd: int = -1, not_built: str = "the launcher was not built",
) -> Chain:
    """The launcher with ``plan`` when there is one (``status_fd``: its status pipe's write
    end); else the ``/bin/sh`` stand-in when there are groups to join or a score to set; else
    ``argv`` itself. SpawnFailed when the plan needs what only the launcher does."""
    if launcher is not None:
        kept = () if plan.filter_fd is None else (plan.filter_fd,)
        return Chain(tuple(launcher_argv(launcher, plan, status_fd, argv)), launcher, env, "/",
                     reports=True, keep_fds=kept)  # fmt: skip
    if plan.needs_launcher:
        raise SpawnFailed(NEEDS_LAUNCHER.format(why=not_built))
    if plan.procs_files or plan.oom_score_adj is not None:
        return Chain(tuple(fallback_argv(plan, argv)), SHELL, env, plan.cwd)
    return Chain(tuple(argv), None, env, plan.cwd)
