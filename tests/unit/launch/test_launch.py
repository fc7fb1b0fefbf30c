"""The compiled launcher on its own: what a job's first process does, step by step.

Each test runs ``jobd-launch`` as the daemon would (its own session, a status pipe) and looks
at what it reports and what the command saw. Both builds run every test: the freestanding one
setup.py made, and the libc one (-DJOBD_LIBC) other architectures get, compiled here.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobd.launch import status
from jobd.launch.plan import Plan, launcher_argv
from jobd.launch.system import SYSTEM_PATH
from jobd.model.namespaces import ALL, Namespace
from jobd.policy.syscalls import FilterSpec

SOURCE = Path(__file__).resolve().parents[3] / "jobd" / "launch" / "launch.c"
NOBODY = 65534
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: namespaces and accounts")


@pytest.fixture(scope="module", params=["freestanding", "libc"])
def launcher(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "freestanding":
        from jobd.launch import binary

        found = binary.compiled()
        if found is None:
            pytest.skip("the jobd launcher was not built here (see setup.py)")
        return found
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler to build the libc launcher")
    target = tmp_path_factory.mktemp("libc") / "jobd-launch"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-DJOBD_LIBC", "-o", str(target),
                    str(SOURCE)], check=True)  # fmt: skip
    target.parent.chmod(0o755)  # an unprivileged job's launcher is still run by root
    return str(target)


@dataclass
class Launched:
    returncode: int
    report: bytes
    stdout: bytes
    stderr: bytes
    pid: int

    @property
    def failure(self) -> status.Report | None:
        return status.parse(self.report) if self.report else None


def run(launcher: str, options: Sequence[str], argv: Sequence[str], *,
        env: dict[str, str] | None = None, timeout: float = 30,
        stop: int | None = None, stop_after: bytes = b"",
        keep: tuple[int, ...] = ()) -> Launched:  # fmt: skip
    """The launcher with ``options`` and then ``argv``; ``stop``: a signal sent to the
    launcher alone once the command's stdout has shown ``stop_after``; ``keep``: descriptors
    it inherits (a filter's)."""
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    argv = [launcher, "-s", str(status_w), *options, "--", *argv]
    proc = subprocess.Popen(argv, env={"PATH": SYSTEM_PATH} if env is None else env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=(status_w, *keep), cwd="/",
                            start_new_session=True)  # fmt: skip
    os.close(status_w)
    try:
        if stop is not None:
            assert proc.stdout is not None
            seen = b""
            while stop_after not in seen:
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"the command ended before printing {stop_after!r}: {seen!r}"
                seen += chunk
            proc.send_signal(stop)
            out, err = proc.communicate(timeout=timeout)
            out = seen + out
        else:
            out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with os.fdopen(status_r, "rb") as pipe:
            report = pipe.read()
    return Launched(proc.returncode, report, out, err, proc.pid)


def message(result: Launched, argv0: str, cwd: str = "/", who: str = "") -> str:
    assert result.failure is not None, result
    return status.failure_message(result.failure, argv0, cwd, who)


def make_file(path: Path, mode: int, text: str = "#!/bin/sh\necho hi\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# --- finding and running the program ------------------------------------------------------


def test_runs_the_command_with_exactly_its_argv_and_environment(launcher: str) -> None:
    env = {"PATH": SYSTEM_PATH, "WEIRD": "a b\tc\n=d", "EMPTY": ""}
    result = run(launcher, ["-p", SYSTEM_PATH], ["env", "-0"], env=env)
    assert (result.returncode, result.report) == (0, b"")
    seen = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if item)
    assert seen == env  # nothing added, nothing lost: the launcher reads no variable
    script = 'printf "%s\\0" "$0" "$@"'
    result = run(launcher, ["-p", SYSTEM_PATH], ["sh", "-c", script, "zero", "", "x y", "\t"])
    assert result.stdout.split(b"\0") == [b"zero", b"", b"x y", b"\t", b""]


def test_argv0_is_kept_as_given(launcher: str) -> None:
    result = run(launcher, ["-p", SYSTEM_PATH], ["sh", "-c", 'echo "$0"'])
    assert result.stdout == b"sh\n"


def test_a_missing_program(launcher: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    result = run(launcher, ["-p", SYSTEM_PATH], [missing])
    assert result.returncode == 127
    assert message(result, missing) == f"cannot execute {missing!r}: no such file"


def test_a_directory(launcher: str, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    result = run(launcher, [], [str(tmp_path / "dir")])
    assert result.returncode == 126
    assert message(result, str(tmp_path / "dir")).endswith(": is a directory")


def test_a_file_without_execute_permission(launcher: str, tmp_path: Path) -> None:
    prog = str(make_file(tmp_path / "data.txt", 0o644))
    result = run(launcher, [], [prog])
    assert result.returncode == 126
    assert message(result, prog) == f"cannot execute {prog!r}: permission denied"


def test_a_file_of_no_executable_format_is_not_run_as_a_script(launcher: str,
                                                               tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    prog = str(make_file(tmp_path / "script", 0o755, f"touch {marker}\n"))
    result = run(launcher, [], [prog])
    assert result.returncode == 126
    assert message(result, prog) == f"cannot execute {prog!r}: {status.NOT_EXECUTABLE}"
    assert not marker.exists()


def test_a_relative_program_is_relative_to_the_working_directory(launcher: str,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    make_file(tmp_path / "sub" / "prog", 0o755)
    for name in ("./sub/prog", "sub/prog"):
        result = run(launcher, ["-d", str(tmp_path)], [name])
        assert (result.returncode, result.stdout) == (0, b"hi\n")
    result = run(launcher, ["-d", "/"], ["./sub/prog"])
    assert message(result, "./sub/prog") == "cannot execute './sub/prog': no such file"


def test_the_search_path_in_order(launcher: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "tool").mkdir()  # a directory of that name is skipped
    make_file(first / "other", 0o644)  # a file that is not executable is skipped
    make_file(second / "other", 0o755, "#!/bin/sh\necho second other\n")
    make_file(second / "tool", 0o755, "#!/bin/sh\necho second tool\n")
    search = f"/nonexistent:{first}:{second}"
    assert run(launcher, ["-p", search], ["tool"]).stdout == b"second tool\n"
    assert run(launcher, ["-p", search], ["other"]).stdout == b"second other\n"


def test_relative_search_path_entries_are_relative_to_the_working_directory(
    launcher: str, tmp_path: Path
) -> None:
    (tmp_path / "bin").mkdir()
    make_file(tmp_path / "bin" / "tool", 0o755, "#!/bin/sh\necho tool\n")
    make_file(tmp_path / "here", 0o755, "#!/bin/sh\necho here\n")
    assert run(launcher, ["-d", str(tmp_path), "-p", "bin"], ["tool"]).stdout == b"tool\n"
    # An empty entry means the working directory, as for execvp.
    result = run(launcher, ["-d", str(tmp_path), "-p", "/nonexistent:"], ["here"])
    assert result.stdout == b"here\n"


def test_a_command_not_found(launcher: str, tmp_path: Path) -> None:
    search = f"{tmp_path}:/nonexistent"
    result = run(launcher, ["-p", search], ["noexec"])
    assert result.returncode == 127
    not_found = f"cannot execute 'noexec': command not found in PATH={search}"
    assert message(result, "noexec") == not_found
    # Found but not executable: as execvp reports it, naming the file found.
    make_file(tmp_path / "noexec", 0o644)
    result = run(launcher, ["-p", search], ["noexec"])
    assert result.returncode == 126
    denied = f"cannot execute 'noexec': permission denied ({tmp_path / 'noexec'})"
    assert message(result, "noexec") == denied


def test_the_working_directory(launcher: str, tmp_path: Path) -> None:
    assert run(launcher, ["-d", str(tmp_path)], ["/bin/pwd"]).stdout == f"{tmp_path}\n".encode()
    missing = str(tmp_path / "nope")
    result = run(launcher, ["-d", missing], ["/bin/true"])
    assert result.returncode == 125
    assert message(result, "/bin/true", missing) == f"working directory {missing!r} does not exist"
    file = str(make_file(tmp_path / "file", 0o644))
    result = run(launcher, ["-d", file], ["/bin/true"])
    assert message(result, "/bin/true", file) == f"working directory {file!r} is not a directory"


def test_the_status_pipe_and_nothing_else_is_closed_before_the_command(launcher: str) -> None:
    result = run(launcher, ["-p", SYSTEM_PATH], ["sh", "-c", "ls /proc/$$/fd"])
    assert result.stdout.split() == [b"0", b"1", b"2"]
    assert result.report == b""


def test_the_command_has_no_signal_blocked(launcher: str) -> None:
    result = run(launcher, ["-p", SYSTEM_PATH], ["grep", "SigBlk", "/proc/self/status"])
    assert result.stdout.split()[1] == b"0000000000000000"


# --- cgroups, OOM score, usage ----------------------------------------------------------


def test_joins_every_cgroup_before_the_command(launcher: str, tmp_path: Path) -> None:
    files = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        files.append(tmp_path / name / "cgroup.procs")
        files[-1].touch()
    options = [word for f in files for word in ("-c", str(f))]
    result = run(launcher, options, ["/bin/sh", "-c", "echo $$"])
    pid = result.stdout.strip().decode()
    assert [f.read_text() for f in files] == [f"{pid}\n"] * 2
    assert pid == str(result.pid)  # the command is the launcher's own process


def test_refuses_to_write_a_pid_into_any_other_file(launcher: str, tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_text("keep me\n")
    result = run(launcher, ["-c", str(target)], ["/bin/true"])
    assert result.returncode == 125
    assert result.failure == status.Report("usage", 22, str(target))
    assert target.read_text() == "keep me\n"


def test_a_cgroup_that_cannot_be_joined(launcher: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "gone" / "cgroup.procs")
    result = run(launcher, ["-c", missing], ["/bin/true"])
    assert result.returncode == 125
    assert message(result, "/bin/true") == (
        f"cannot join the job's cgroup {missing}: no such file or directory")


@pytest.mark.parametrize("options", [[], ["-x", "1"], ["-u", "abc"], ["-G", "1,,2"], ["-n"]])
def test_usage_errors(launcher: str, options: list[str]) -> None:
    result = run(launcher, options, ["/bin/true"] if options else [])
    assert result.returncode == 125
    assert result.failure is not None and result.failure.step == "usage"


def test_sets_the_oom_score(launcher: str) -> None:
    result = run(launcher, ["-o", "700"], ["/bin/cat", "/proc/self/oom_score_adj"])
    assert result.stdout == b"700\n"


# --- accounts -----------------------------------------------------------------------------


@needs_root
def test_drops_to_the_account_with_no_capability_and_no_new_privileges(launcher: str) -> None:
    options = ["-u", str(NOBODY), "-g", str(NOBODY), "-G", "1,2"]
    result = run(launcher, options, ["/bin/sh", "-c", "id -u; id -g; id -G; cat /proc/self/status"])
    lines = result.stdout.decode().splitlines()
    assert lines[:3] == [str(NOBODY), str(NOBODY), f"{NOBODY} 1 2"]
    fields = dict(line.split(":\t", 1) for line in lines[3:] if ":\t" in line)
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[caps], 16) == 0, caps
    assert fields["NoNewPrivs"] == "1"


@needs_root
def test_the_working_directory_is_entered_as_the_account(launcher: str, tmp_path: Path) -> None:
    tmp_path.chmod(0o700)  # root's alone
    result = run(launcher, ["-u", str(NOBODY), "-g", str(NOBODY), "-d", str(tmp_path)],
                 ["/bin/true"])
    assert result.returncode == 125
    assert message(result, "/bin/true", str(tmp_path), " (as nobody)") == (
        f"working directory {str(tmp_path)!r} is not accessible (permission denied) (as nobody)")


@needs_root
def test_the_program_is_found_as_the_account(launcher: str, shared: Path) -> None:
    secret = shared / "secret"
    secret.mkdir(mode=0o700)
    make_file(secret / "tool", 0o755)
    result = run(launcher, ["-u", str(NOBODY), "-g", str(NOBODY), "-p", str(secret)], ["tool"])
    assert result.returncode == 126
    assert result.failure == status.Report("exec", 13, str(secret / "tool"))


# --- namespaces, mounts and the init -------------------------------------------------------


def isolated(plan: Plan, launcher: str) -> list[str]:
    """The options the daemon gives ``plan`` (without -s and the command)."""
    words = launcher_argv(launcher, plan, 3, ["x"])
    return words[3:-2]


USER = Plan(namespaces=ALL, hostname="job-test", read_only=True,
            private_dirs=("/tmp", "/var/tmp", "/dev/shm", "/run/lock"), tmpfs_size=8 << 20,
            search_path=SYSTEM_PATH)  # fmt: skip


def user_options(launcher: str, **changes: object) -> list[str]:
    from dataclasses import replace

    from jobd.policy.accounts import lookup

    plan = replace(USER, account=lookup(f"{NOBODY}:{NOBODY}"), **changes)  # type: ignore[arg-type]
    return isolated(plan, launcher)


@needs_root
def test_a_user_job_sees_its_own_proc_and_sys_whatever_its_working_directory(
    launcher: str,
) -> None:
    for cwd in ("/proc", "/proc/self/..", "/sys", "/"):
        script = "ls /proc | grep -c '^[0-9]'; ls . | head -50; readlink /proc/self/cwd"
        result = run(launcher, user_options(launcher, cwd=cwd), ["/bin/sh", "-c", script])
        assert result.report == b"", result
        lines = result.stdout.decode().splitlines()
        # PID 1 (the init), the shell, ls and grep, and the pipeline's other side: no more.
        assert int(lines[0]) <= 5, lines
        if cwd.startswith("/proc"):
            assert set(line for line in lines[1:-1] if line.isdigit()) <= {"1", "2", "3", "4",
                                                                          "5", "6"}, lines
        if cwd == "/sys":
            assert "class" in lines
    net = run(launcher, user_options(launcher, cwd="/sys/class/net"), ["/bin/ls"])
    assert net.stdout.split() == [b"lo"]


@needs_root
def test_the_file_system_is_read_only_but_the_private_directories(launcher: str) -> None:
    script = ("for d in /etc /root /var/lib /tmp /var/tmp /dev/shm /run/lock /dev; do "
              "if touch $d/jobd-test 2>/dev/null; then echo $d yes; else echo $d no; fi; done; "
              "ls -A /tmp; df -B1 --output=size /tmp | tail -1")
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", script])
    lines = result.stdout.decode().split("\n")
    assert lines[:8] == ["/etc no", "/root no", "/var/lib no", "/tmp yes", "/var/tmp yes",
                         "/dev/shm yes", "/run/lock yes", "/dev no"]
    assert lines[8] == "jobd-test"  # a fresh, empty /tmp: only what this job just made
    assert int(lines[9]) == 8 << 20
    assert not Path("/tmp/jobd-test").exists()


@needs_root
def test_a_writable_path_the_configuration_names(launcher: str) -> None:
    place = Path(tempfile.mkdtemp(prefix="jobd-test-", dir="/var/cache"))  # not a private one
    try:
        place.chmod(0o777)
        options = user_options(launcher, writable=(str(place),))
        script = f"echo hi > {place}/f && cat {place}/f; touch {place.parent}/x"
        result = run(launcher, options, ["/bin/sh", "-c", script])
        assert result.stdout == b"hi\n"
        assert b"Read-only file system" in result.stderr  # only that path
        assert (place / "f").read_text() == "hi\n"
    finally:
        shutil.rmtree(place)


@needs_root
def test_a_minimal_dev_with_private_ptys(launcher: str) -> None:
    result = run(launcher, user_options(launcher), ["/bin/ls", "-A", "/dev", "/dev/pts"])
    listing = result.stdout.decode()
    dev = set(listing.split("\n\n")[0].split("\n")[1:])
    assert dev == {"fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                   "stdin", "stdout", "tty", "urandom", "zero"}
    assert listing.split("\n\n")[1].split() == ["/dev/pts:", "ptmx"]  # no other job's ptys
    echo = run(launcher, user_options(launcher), ["/bin/sh", "-c", "echo x > /dev/null; echo $?"])
    assert echo.stdout == b"0\n"


@needs_root
def test_the_host_name_and_loopback(launcher: str) -> None:
    script = "cat /proc/sys/kernel/hostname; cat /sys/class/net/lo/flags"
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", script])
    name, flags = result.stdout.decode().split()
    assert name == "job-test"
    assert int(flags, 16) & 1  # IFF_UP


@needs_root
def test_the_command_runs_under_an_init_as_the_account(launcher: str) -> None:
    script = "echo $$; ps -o pid=,user=,args= -p 1"
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", script])
    me, init = result.stdout.decode().splitlines()
    assert me == "2"
    assert init.split()[:2] == ["1", "root"]


@needs_root
@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_the_exit_code_is_the_commands(launcher: str, code: int) -> None:
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", f"exit {code}"])
    assert result.returncode == code


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_a_death_by_signal_is_the_commands(launcher: str, sig: int) -> None:
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", f"kill -{int(sig)} $$"])
    assert result.returncode == -sig


@needs_root
def test_sigterm_to_the_launcher_kills_a_command_without_a_handler(launcher: str) -> None:
    begin = time.monotonic()
    result = run(launcher, user_options(launcher),
                 ["/bin/sh", "-c", "echo ready; exec sleep 100"],
                 stop=signal.SIGTERM, stop_after=b"ready")  # fmt: skip
    assert result.returncode == -signal.SIGTERM
    assert time.monotonic() - begin < 10  # not the sleep: the signal ended it


@pytest.mark.parametrize("plan", ["plain", "user"])
def test_the_command_starts_with_no_signal_ignored(launcher: str, plan: str,
                                                   tmp_path: Path) -> None:
    """A daemon started with signals ignored (`nohup`, a shell's `&` ignores INT and QUIT)
    must not hand that on: a shell could not even trap them, and a stop's SIGINT would be
    lost."""
    if plan == "user" and os.geteuid() != 0:
        pytest.skip("needs root: a user job's plan makes namespaces and drops privileges")
    ignoring = tmp_path / "ignoring-launcher"
    ignoring.write_text(f"#!/bin/sh\ntrap '' INT QUIT HUP USR1 TERM\nexec {launcher} \"$@\"\n")
    ignoring.chmod(0o755)
    options = user_options(launcher) if plan == "user" else []
    grep = shutil.which("grep") or "/bin/grep"
    result = run(str(ignoring), options, [grep, "^SigIgn:", "/proc/self/status"])
    assert result.stdout.split() == [b"SigIgn:", b"0000000000000000"], result


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH])
def test_every_forwarded_signal_reaches_the_command_once(launcher: str, sig: int) -> None:
    script = (f"n=0; trap 'n=$((n+1))' {int(sig)}; echo ready; sleep 1 & wait; "
              f"sleep 0.3 & wait; echo got $n")
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", script],
                 stop=sig, stop_after=b"ready")  # fmt: skip
    assert result.stdout.decode().split("\n")[1] == "got 1"
    assert result.returncode == 0


@needs_root
def test_orphans_are_reaped_while_the_command_runs(launcher: str) -> None:
    script = ("i=0; while [ $i -lt 100 ]; do sh -c 'sleep 0.01 &'; i=$((i+1)); done; "
              "sleep 0.5; ps -eo stat= | grep -c Z")
    result = run(launcher, user_options(launcher), ["/bin/sh", "-c", script])
    assert result.stdout == b"0\n"


@needs_root
def test_a_failure_inside_the_namespace_is_reported(launcher: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    result = run(launcher, user_options(launcher, cwd=missing), ["/bin/true"])
    assert result.returncode == 125
    assert result.failure == status.Report("cwd", 2, missing)
    result = run(launcher, user_options(launcher), ["jobd-no-such-command"])
    assert result.returncode == 127
    assert result.failure is not None and result.failure.step == "notfound"


@needs_root
def test_namespaces_without_a_pid_namespace_need_no_init(launcher: str) -> None:
    options = user_options(launcher)
    flags = options[options.index("-n") + 1]
    without_pid = str(int(flags) & ~0x20000000)
    options[options.index("-n") + 1] = without_pid
    options.remove("-P")
    result = run(launcher, options, ["/bin/sh", "-c", "echo $$; cat /proc/sys/kernel/hostname"])
    pid, name = result.stdout.decode().split()
    assert int(pid) == result.pid and name == "job-test"


@needs_root
def test_each_namespace_alone(launcher: str) -> None:
    for ns in Namespace:
        plan = Plan(namespaces=frozenset({ns}), hostname="h", search_path=SYSTEM_PATH)
        result = run(launcher, isolated(plan, launcher), ["/bin/true"])
        assert (result.returncode, result.report) == (0, b""), ns


# --- the syscall filter ------------------------------------------------------------------

# Each call with harmless arguments: its errno (0: it returned), one line each.
CALLS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
calls = {"io_uring_setup": (425, 1, 0), "bpf": (321, 0, 0, 0), "keyctl": (250, 0, 0),
         "userfaultfd": (323, 0), "perf_event_open": (298, 0, 0, -1, -1, 0),
         "unshare_user": (272, 0x10000000), "clone3": (435, 0, 0), "setns": (308, -1, 0),
         "personality_rie": (135, 0x400000), "personality_query": (135, 0xFFFFFFFF),
         "getpid": (39,)}
for name, (number, *args) in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    print(name, ctypes.get_errno() if result == -1 else 0)
"""


@pytest.fixture(scope="module")
def default_filter() -> int:
    from jobd.launch import seccomp

    if seccomp.available():
        pytest.skip(seccomp.available())
    return seccomp.sealed(seccomp.build(FilterSpec(), pid_namespace=True))


def calls(result: Launched) -> dict[str, int]:
    assert result.report == b"", result
    return {k: int(v) for k, v in (line.split() for line in result.stdout.decode().splitlines())}


def test_the_filter_denies_its_calls_and_nothing_else(launcher: str, default_filter: int) -> None:
    import sys

    free = calls(run(launcher, [], [sys.executable, "-c", CALLS]))
    filtered = calls(run(launcher, ["-f", str(default_filter)], [sys.executable, "-c", CALLS],
                         keep=(default_filter,)))  # fmt: skip
    for name in ("io_uring_setup", "bpf", "keyctl", "userfaultfd", "perf_event_open",
                 "unshare_user", "setns", "personality_rie"):  # fmt: skip
        assert filtered[name] == errno.EPERM, (name, filtered, free)
        assert free[name] != errno.EPERM, (name, free)  # the control: it is the filter's doing
    assert filtered["clone3"] == errno.ENOSYS
    assert filtered["personality_query"] == free["personality_query"] == 0
    assert filtered["getpid"] == 0


@needs_root
def test_a_user_job_under_the_filter_cannot_make_a_user_namespace(
    launcher: str, default_filter: int
) -> None:
    options = [*user_options(launcher), "-f", str(default_filter)]
    for argv in (["unshare", "-U", "-r", "id"], ["unshare", "-U", "-r", "-m", "sh", "-c",
                                                 "mount -t tmpfs x /mnt"]):  # fmt: skip
        result = run(launcher, options, argv, keep=(default_filter,))
        assert result.returncode != 0, result
        assert b"Operation not permitted" in result.stderr, result


@pytest.mark.parametrize("abi", ["32", "x32"])
def test_another_architectures_abi_kills_the_process(
    launcher: str, default_filter: int, tmp_path: Path, abi: str
) -> None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None or os.uname().machine != "x86_64":
        pytest.skip("needs a C compiler on x86_64 to make a 32-bit int 0x80 call")
    source = tmp_path / "abi.c"
    source.write_text(
        "#include <stdio.h>\n#include <unistd.h>\n"
        "int main(int c, char **v) { long r; if (v[1][0] == '3') __asm__ volatile("
        '"int $0x80" : "=a"(r) : "a"(20L) : "memory"); else r = syscall(0x40000000L | 39);'
        ' printf("returned %ld\\n", r); return 0; }\n')
    subprocess.run([cc, "-O2", "-o", str(tmp_path / "abi"), str(source)], check=True)
    free = run(launcher, [], [str(tmp_path / "abi"), abi])
    assert free.returncode == 0 and free.stdout.startswith(b"returned"), free
    if abi == "32" and free.stdout.startswith(b"returned -"):
        # getpid through int 0x80 fails unfiltered: User-Mode Linux, say, has no 32-bit entry.
        pytest.skip(f"this kernel serves no 32-bit system calls ({free.stdout.strip().decode()}"
                    " unfiltered): nothing for the filter to stop")
    filtered = run(launcher, ["-f", str(default_filter)], [str(tmp_path / "abi"), abi],
                   keep=(default_filter,))  # fmt: skip
    assert filtered.returncode == -signal.SIGSYS, filtered


def test_a_filter_descriptor_that_is_not_one_fails_the_launch(launcher: str,
                                                              tmp_path: Path) -> None:
    junk = os.open(tmp_path / "junk", os.O_RDWR | os.O_CREAT)
    os.write(junk, b"not a filter")  # 12 bytes: not whole instructions
    try:
        result = run(launcher, ["-f", str(junk)], ["/bin/true"], keep=(junk,))
    finally:
        os.close(junk)
    assert result.returncode == 125
    assert result.failure == status.Report("seccomp", 22, "filter size")
