"""The syscall policy: which system calls a role's jobs may not make. What each name means
and why it is denied is in ``jobd.launch.seccomp``, which builds the filter.

``default`` denies DENIED, and DENIED_WITHOUT_PID_NAMESPACE to a job without a PID namespace
(in one, the job can name only its own processes, so debuggers keep working); a role's
``syscalls_deny`` adds to it and ``syscalls_allow`` takes from it.
"""

from __future__ import annotations

from dataclasses import dataclass

DENIED: tuple[str, ...] = (
    # namespaces and mounts
    "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    # the kernel's least hardened surface
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "userfaultfd",
    "perf_event_open", "keyctl", "add_key", "request_key",
    # the host's business
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "swapon",
    "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "open_by_handle_at",
    "name_to_handle_at", "lookup_dcookie", "syslog", "uselib", "ustat", "sysfs", "_sysctl",
    "vhangup", "iopl", "ioperm", "create_module", "get_kernel_syms", "query_module",
    "nfsservctl",
)  # fmt: skip
DENIED_WITHOUT_PID_NAMESPACE = ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp")


@dataclass(frozen=True)
class FilterSpec:
    """What a role's jobs may not call: ``default`` (the list above, less ``allow``, plus
    ``deny``) or no filter at all (``enabled`` False)."""

    enabled: bool = True
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    def names(self, pid_namespace: bool) -> list[str]:
        """Every call denied outright (EPERM), in order, each once."""
        base = [*DENIED, *(() if pid_namespace else DENIED_WITHOUT_PID_NAMESPACE)]
        allowed = set(self.allow)
        return list(dict.fromkeys(n for n in (*base, *self.deny) if n not in allowed))

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        extra = [f"+{n}" for n in self.deny] + [f"-{n}" for n in self.allow]
        return " ".join(["default", *extra])

    def details(self) -> list[str]:
        """What the filter does, for ``jobd --check``."""
        if not self.enabled:
            return ["no syscall filter"]
        without = [n for n in DENIED_WITHOUT_PID_NAMESPACE if n not in self.allow]
        return [
            f"EPERM: {', '.join(self.names(pid_namespace=True))}",
            f"EPERM without a PID namespace: {', '.join(without)}",
            "EPERM: unshare and clone with CLONE_NEWUSER; personality but for 0, 0x8, 0x20000, "
            "0x20008 and the query 0xffffffff",
            "ENOSYS: clone3 (libc falls back to clone, whose flags the filter can read)",
            "killed: any call of another architecture's ABI (32-bit int 0x80, x32)",
        ]
