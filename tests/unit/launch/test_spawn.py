"""jobd.launch.spawn with real processes: what the child gets, exit and signal status, errors,
waiting."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from jobd.launch.spawn import Child, spawn

# Generous bound for anything that waits on a real process.
TIMEOUT = 15.0
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
SLEEP = ["sleep", "30"]
# Lists the child's descriptors from /proc/self/fd, minus the one the listing itself used.
LIST_FDS = (
    "import fcntl, os\n"
    "names = os.listdir('/proc/self/fd')\n"
    "def is_open(fd):\n"
    "    try:\n"
    "        fcntl.fcntl(fd, fcntl.F_GETFD)\n"
    "        return True\n"
    "    except OSError:\n"
    "        return False\n"
    "for fd in sorted(int(n) for n in names if is_open(int(n))):\n"
    "    print(fd, os.readlink(f'/proc/self/fd/{fd}'))\n"
)


def which(name: str) -> str:
    for directory in ENV["PATH"].split(":"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise AssertionError(f"{name} not found")


def start(argv: Sequence[str], env: Mapping[str, str] = ENV, cwd: str = "/") -> Child:
    return spawn(
        argv, executable=which(argv[0]) if "/" not in argv[0] else argv[0], env=env, cwd=cwd
    )


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str], env: Mapping[str, str] = ENV, cwd: str = "/"
) -> AsyncIterator[Child]:
    """A started child that is killed, reaped and closed however the test ends."""
    child = start(argv, env, cwd)
    try:
        with trio.fail_after(TIMEOUT):
            yield child
    finally:
        with trio.CancelScope(shield=True):
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)
            await child.aclose()


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def output(child: Child) -> tuple[bytes, bytes, int]:
    """Both streams to EOF, read concurrently, and the exit status."""
    got: dict[str, bytes] = {}

    async def pump(name: str, stream: trio.abc.ReceiveStream) -> None:
        got[name] = await read_all(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, "out", child.stdout)
        nursery.start_soon(pump, "err", child.stderr)
    return got["out"], got["err"], await child.wait()


def open_fds() -> set[int]:
    names = os.listdir("/proc/self/fd")
    result = set()
    for name in names:
        with contextlib.suppress(OSError):
            fcntl.fcntl(int(name), fcntl.F_GETFD)
            result.add(int(name))
    return result


def unreaped(pid: int) -> bool:
    """Still our child and not reaped (running or a zombie); does not reap it."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


# --- what the child gets -----------------------------------------------------------------


async def test_environment_is_exactly_the_given_one() -> None:
    env = {"PATH": "/bin", "A": "1", "WITH_SPACE": "a b", "NEWLINE": "x\ny", "EQ": "k=v", "E": ""}
    async with running(["env", "-0"], env=env) as child:
        out, _, code = await output(child)
    assert code == 0
    pairs = [item.split(b"=", 1) for item in out.split(b"\0") if item]
    assert {k.decode(): v.decode() for k, v in pairs} == env


async def test_empty_environment() -> None:
    async with running(["env", "-0"], env={}) as child:
        out, _, code = await output(child)
    assert (out, code) == (b"", 0)


async def test_working_directory(tmp_path: Path) -> None:
    async with running(["pwd", "-P"], cwd=str(tmp_path)) as child:
        out, _, code = await output(child)
    assert (out, code) == (f"{tmp_path}\n".encode(), 0)  # pytest's tmp_path is resolved


async def test_new_session_and_process_group() -> None:
    async with running(SLEEP) as child:
        assert os.getsid(child.pid) == child.pid
        assert os.getpgid(child.pid) == child.pid
        assert os.getsid(child.pid) != os.getsid(0)


async def test_no_descriptor_leaks_into_the_child(tmp_path: Path) -> None:
    # The parent holds extra descriptors: a plain file, one made inheritable on purpose, a
    # socket pair, and another running child's pipes and pidfd.
    extra = [os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)]
    inheritable = os.open(tmp_path / "g", os.O_CREAT | os.O_RDWR)
    os.set_inheritable(inheritable, True)
    extra.append(inheritable)
    a, b = socket.socketpair()
    try:
        async with running(SLEEP) as other, running([sys.executable, "-c", LIST_FDS]) as child:
            assert other.returncode is None
            out, err, code = await output(child)
    finally:
        for fd in extra:
            os.close(fd)
        a.close()
        b.close()
    assert code == 0, err
    lines = out.decode().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["0", "1", "2"], lines
    targets = [line.split(" ", 1)[1] for line in lines]
    assert targets[0] == "/dev/null"
    assert targets[1].startswith("pipe:") and targets[2].startswith("pipe:")
    assert targets[1] != targets[2]  # two separate pipes


async def test_stdin_is_dev_null() -> None:
    async with running(["sh", "-c", "cat; echo rc=$?"]) as child:
        out, _, code = await output(child)
    assert (out, code) == (b"rc=0\n", 0)


async def test_output_through_both_pipes() -> None:
    script = "printf out1; printf err1 >&2; printf out2; printf err2 >&2"
    async with running(["sh", "-c", script]) as child:
        out, err, code = await output(child)
    assert (out, err, code) == (b"out1out2", b"err1err2", 0)


async def test_argv_zero_is_kept_apart_from_the_executable() -> None:
    # sh -c gives its own argv[0] as $0: what the child sees, not the file that runs.
    argv = ["custom-name", "-c", 'printf "%s" "$0"']
    async with spawn(argv, executable="/bin/sh", env=ENV, cwd="/") as child:
        out, _, code = await output(child)
    assert (out, code) == (b"custom-name", 0)


# --- exit status, signals, reaping --------------------------------------------------------


async def test_exit_code() -> None:
    async with running(["sh", "-c", "exit 3"]) as child:
        assert await child.wait() == 3
        assert child.returncode == 3


async def test_killed_by_a_signal_is_negative() -> None:
    async with running(SLEEP) as child:
        assert child.returncode is None
        child.send_signal(signal.SIGTERM)
        assert await child.wait() == -signal.SIGTERM
    async with running(["sh", "-c", "kill -KILL $$"]) as child:
        assert await child.wait() == -signal.SIGKILL


async def test_no_zombie_left_after_wait() -> None:
    async with running(["true"]) as child:
        assert await child.wait() == 0
        assert not unreaped(child.pid)
        # Waiting again just returns the status.
        assert await child.wait() == 0


async def test_signal_after_reaping_does_nothing() -> None:
    async with running(["true"]) as child:
        await child.wait()
        child.send_signal(signal.SIGKILL)  # the pid may be someone else's by now: no-op
    with pytest.raises(trio.ClosedResourceError):
        child.send_signal(signal.SIGKILL)


async def test_group_signal_reaches_the_group_after_the_leader_was_reaped() -> None:
    # The leader leaves a sleep behind in its process group and exits.
    script = "sleep 30 >/dev/null 2>&1 & echo $!"
    async with running(["sh", "-c", script]) as child:
        out, _, code = await output(child)
        assert code == 0
        left = int(out)
        assert os.getpgid(left) == child.pid
        left_fd = os.pidfd_open(left)  # not our child: its pidfd still says when it exits
        try:
            child.send_signal(signal.SIGKILL, group=True)
            await trio.lowlevel.wait_readable(left_fd)
        finally:
            trio.lowlevel.notify_closing(left_fd)
            os.close(left_fd)
        child.send_signal(signal.SIGKILL, group=True)  # an empty group is not an error


async def test_group_signal_without_the_kernels_group_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Linux < 6.9 refuses PIDFD_SIGNAL_PROCESS_GROUP with EINVAL: killpg, as before.
    real = signal.pidfd_send_signal

    def old_kernel(pidfd: int, sig: int, siginfo: None = None, flags: int = 0) -> None:
        if flags:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real(pidfd, sig, siginfo, flags)

    monkeypatch.setattr(signal, "pidfd_send_signal", old_kernel)
    async with running(SLEEP) as child:
        child.send_signal(signal.SIGTERM, group=True)
        assert await child.wait() == -signal.SIGTERM


async def test_wait_does_not_block_other_tasks() -> None:
    async with running(SLEEP) as sleeper:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper.wait)
            await trio.testing.wait_all_tasks_blocked()
            # While one wait is pending, the loop runs other work to completion, including a
            # whole other child's life.
            async with running(["true"]) as other:
                assert await other.wait() == 0
            assert sleeper.returncode is None
            sleeper.send_signal(signal.SIGKILL)
        assert sleeper.returncode == -signal.SIGKILL


async def test_concurrent_waits_get_the_same_status() -> None:
    results: list[int] = []
    async with running(SLEEP) as child:

        async def waiter() -> None:
            results.append(await child.wait())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            child.send_signal(signal.SIGTERM)
    assert results == [-signal.SIGTERM] * 3


async def test_cancelled_wait_leaves_a_reapable_child() -> None:
    async with running(SLEEP) as child:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.wait)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert child.returncode is None
        assert unreaped(child.pid)
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        assert not unreaped(child.pid)


async def test_cancelled_aclose_kills_and_reaps() -> None:
    before = open_fds()
    child = start(SLEEP)
    with trio.CancelScope() as scope:
        scope.cancel()
        await child.aclose()
    assert child.returncode == -signal.SIGKILL
    assert not unreaped(child.pid)
    assert open_fds() == before


async def test_aclose_leaves_no_descriptor_open() -> None:
    before = open_fds()
    child = start(["sh", "-c", "echo hi; echo there >&2"])
    assert len(open_fds() - before) == 3  # two pipes and the pidfd
    for fd in open_fds() - before:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, fd
    await child.aclose()
    # It may have written before the pipes were closed, or died of SIGPIPE (left at its
    # default in the child, as subprocess does) writing after.
    assert child.returncode in (0, -signal.SIGPIPE)
    assert open_fds() == before


# --- errors: raised by spawn itself, with the errno, nothing left behind ------------------


def make_file(path: Path, mode: int, text: str) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing program", errno.ENOENT),
        ("missing cwd", errno.ENOENT),
        ("cwd is a file", errno.ENOTDIR),
        ("not executable", errno.EACCES),
        ("not an executable format", errno.ENOEXEC),
        ("a directory", errno.EACCES),
    ],
)
async def test_spawn_errors(tmp_path: Path, kind: str, expected: int) -> None:
    executable, cwd = "/bin/true", "/"
    if kind == "missing program":
        executable = str(tmp_path / "nope")
    elif kind == "missing cwd":
        cwd = str(tmp_path / "gone")
    elif kind == "cwd is a file":
        cwd = make_file(tmp_path / "file", 0o644, "")
    elif kind == "not executable":  # no x bit: refused even to root
        executable = make_file(tmp_path / "script", 0o644, "#!/bin/sh\necho hi\n")
    elif kind == "not an executable format":
        executable = make_file(tmp_path / "data", 0o755, "just some text\n")
    elif kind == "a directory":
        executable = str(tmp_path)
    before = open_fds()
    with pytest.raises(OSError) as info:
        spawn(["prog"], executable=executable, env=ENV, cwd=cwd)
    assert info.value.errno == expected, info.value
    assert info.value.filename == (cwd if "cwd" in kind else executable)
    assert open_fds() == before


def test_empty_argv_is_refused() -> None:
    with pytest.raises(ValueError, match="argv"):
        spawn([], executable="/bin/true", env=ENV, cwd="/")
