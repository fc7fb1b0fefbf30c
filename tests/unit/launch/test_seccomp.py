"""The syscall filter, built with libseccomp: what it holds, its configuration, its memfd."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers_unit import config_from

from jobd.config import ConfigError
from jobd.launch import seccomp
from jobd.launch.isolator import Isolator
from jobd.policy.auth import Role
from jobd.policy.syscalls import DENIED, DENIED_WITHOUT_PID_NAMESPACE, FilterSpec

pytestmark = pytest.mark.skipif(bool(seccomp.available()), reason=seccomp.available() or "-")


def test_the_default_denies_what_docker_denies_and_ptrace_only_without_a_pid_namespace() -> None:
    spec = FilterSpec()
    for name in ("setns", "mount", "io_uring_setup", "bpf", "userfaultfd", "perf_event_open",
                 "keyctl", "add_key", "request_key", "kexec_load", "init_module", "reboot",
                 "open_by_handle_at", "syslog"):  # fmt: skip
        assert name in spec.names(pid_namespace=True), name
    assert "ptrace" not in spec.names(pid_namespace=True)
    assert set(DENIED_WITHOUT_PID_NAMESPACE) <= set(spec.names(pid_namespace=False))
    changed = FilterSpec(deny=("chroot",), allow=("bpf", "ptrace"))
    assert "chroot" in changed.names(True) and "bpf" not in changed.names(True)
    assert "ptrace" not in changed.names(False)
    assert changed.describe() == "default +chroot -bpf -ptrace"
    assert FilterSpec(enabled=False).describe() == "none"


def test_personality_passes_exactly_the_safe_values_and_the_query() -> None:
    def allowed(value: int) -> bool:
        return not any(value & mask == want for mask, want in seccomp.personality_denials())

    for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert allowed(value), hex(value)
    # READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, another type, a flag behind the query's top bits.
    for value in (0x400000, 0x40000, 0x1, 0x10, 0xF0400000, 0x80000000, 0xFFFFFFFE, 0x10000008):
        assert not allowed(value), hex(value)


def test_a_filter_is_a_bpf_program_of_whole_instructions() -> None:
    program = seccomp.build(FilterSpec(), pid_namespace=True)
    assert program and len(program) % 8 == 0
    assert len(seccomp.build(FilterSpec(), pid_namespace=False)) > len(program)


def test_an_unknown_name_is_refused_at_once() -> None:
    with pytest.raises(seccomp.SeccompError, match="unknown system call 'no_such_call'"):
        seccomp.check(FilterSpec(deny=("no_such_call",)))
    with pytest.raises(seccomp.SeccompError, match="unknown system call"):
        seccomp.build(FilterSpec(deny=("no_such_call",)), True)
    assert seccomp.syscall_number("getpid") > 0


def test_the_memfd_is_sealed_and_holds_the_program() -> None:
    program = seccomp.build(FilterSpec(), True)
    fd = seccomp.sealed(program)
    try:
        assert os.pread(fd, len(program) + 1, 0) == program
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x" * 8, 0)
        assert info.value.errno == errno.EPERM
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def test_the_isolator_builds_each_filter_once() -> None:
    isolator = Isolator()
    isolator.availability = type(isolator.availability)(seccomp_reason="")
    isolator.prepare()
    user = isolator.rule(Role.USER).syscalls
    fds = dict(isolator.filters)
    assert set(fds) == {(user, True), (user, False)}
    assert isolator.filter_fd(user, True) == fds[(user, True)]
    assert isolator.filter_fd(FilterSpec(enabled=False), True) is None
    for fd in fds.values():
        os.close(fd)


def test_config(tmp_path: Path) -> None:
    config = config_from(tmp_path, """
        [isolation.user]
        syscalls_deny = ["chroot"]
        syscalls_allow = ["ptrace"]
        [isolation.admin]
        syscall_filter = "default"
    """)  # fmt: skip
    assert config.isolation.rule(Role.USER).syscalls == FilterSpec(True, ("chroot",), ("ptrace",))
    assert config.isolation.rule(Role.ADMIN).syscalls == FilterSpec()
    off = config_from(tmp_path, '[isolation.user]\nsyscall_filter = "none"\n')
    assert off.isolation.rule(Role.USER).syscalls == FilterSpec(enabled=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[isolation.user]\nsyscall_filter = "strict"\n',
         'syscall_filter must be "default" or "none"'),
        ('[isolation.user]\nsyscalls_deny = "chroot"\n',
         "syscalls_deny must be a list of system call names"),
        ('[isolation.admin]\nsyscalls_deny = ["chroot"]\n',
         'syscalls_deny and syscalls_allow need syscall_filter = "default"'),
    ],
)  # fmt: skip
def test_config_errors_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from(tmp_path, text)


def test_every_default_name_is_known_here_or_an_old_call_this_architecture_lacks() -> None:
    missing = []
    for name in DENIED:
        try:
            seccomp.syscall_number(name)
        except seccomp.SeccompError:
            missing.append(name)
    # Only calls some architectures never had (x86_64 has them all as numbers).
    assert set(missing) <= {"create_module", "get_kernel_syms", "query_module", "nfsservctl",
                            "uselib", "ustat", "sysfs", "_sysctl", "iopl", "ioperm"}
