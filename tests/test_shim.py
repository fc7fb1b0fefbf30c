"""The cgroup shims: join every group given, then become the command; the same for both."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.cgroups import shim
from jobd.system import SHELL

CAT = shutil.which("cat") or "/bin/cat"


@pytest.fixture
def fresh() -> Iterator[None]:
    """compiled() tried anew, and its cached answer forgotten again afterwards."""
    shim.compiled.cache_clear()
    yield
    shim.compiled.cache_clear()


def run(procs: list[Path], executable: str, argv: list[str],
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    program, args = shim.shim_command(procs, executable, argv)
    return subprocess.run(args, executable=program, env={"PATH": "/usr/bin:/bin"} | (env or {}),
                          capture_output=True, timeout=30, check=False)


def procs_files(tmp_path: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        (tmp_path / f"h{i}").mkdir()
        files.append(tmp_path / f"h{i}" / "cgroup.procs")
        files[-1].touch()
    return files


def test_the_compiled_shim_is_built_where_it_can_be() -> None:
    # A silent fallback to /bin/sh would cost every job ~0.4 ms: the install must build it.
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip(f"the compiled shim is for x86_64 Linux, not {platform.machine()}")
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler here to build it with")
    assert shim.compiled() == str(shim.COMPILED)
    assert shim.describe() == f"cgroup shim: {shim.COMPILED}"


def test_each_shim_writes_its_pid_into_every_file_then_becomes_the_command(
    each_shim: str, tmp_path: Path
) -> None:
    files = procs_files(tmp_path, 3)
    # The command prints its own pid and argv: the pid written is the command's own.
    done = run(files, SHELL, ["sh", "-c", 'echo $$; echo "$0"', "renamed"])
    assert done.returncode == 0, done.stderr
    pid, argv0 = done.stdout.decode().split()
    assert [f.read_text() for f in files] == [f"{pid}\n"] * 3
    assert argv0 == "renamed"
    assert done.stderr == b""


def test_the_command_gets_its_arguments_byte_for_byte(each_shim: str, tmp_path: Path) -> None:
    args = ["", " two words ", "--", "-c", "line\nbreak", "é"]
    done = run(procs_files(tmp_path, 1), CAT, ["cat", "/proc/self/cmdline", *args])
    assert done.stdout.split(b"\0")[:-1] == [b"cat", b"/proc/self/cmdline",
                                              *(a.encode() for a in args)]


def test_the_compiled_shim_keeps_argv0_and_the_environment_exactly(
    compiled_shim: str, tmp_path: Path
) -> None:
    env = {"A": "1", "WITH-DASH": "kept", "EMPTY": ""}
    done = run(procs_files(tmp_path, 2), CAT, ["my-cat", "/proc/self/environ"], env)
    assert done.stdout.split(b"\0")[:-1] == [b"PATH=/usr/bin:/bin", b"A=1", b"WITH-DASH=kept",
                                              b"EMPTY="]
    done = run([], CAT, ["my-cat", "/proc/self/cmdline"])
    assert done.stdout == b"my-cat\0/proc/self/cmdline\0"


def test_a_group_that_cannot_be_joined_stops_before_the_command(
    each_shim: str, tmp_path: Path
) -> None:
    files = [*procs_files(tmp_path, 1), tmp_path / "missing" / "cgroup.procs"]
    marker = tmp_path / "ran"
    done = run(files, SHELL, ["sh", "-c", f"touch {marker}"])
    assert done.returncode == shim.JOIN_FAILED
    assert str(files[1]).encode() in done.stderr
    assert not marker.exists()


def test_the_compiled_shim_says_why_a_command_does_not_run(
    compiled_shim: str, tmp_path: Path
) -> None:
    script = tmp_path / "plain"
    script.write_text("echo no\n")
    done = run([], str(tmp_path / "absent"), ["absent"])
    assert (done.returncode, done.stderr) == (
        127, f"jobd-shim: cannot execute {tmp_path}/absent: No such file or directory\n".encode()
    )
    done = run([], str(script), ["plain"])  # not executable
    assert (done.returncode, done.stderr) == (
        126, f"jobd-shim: cannot execute {script}: Permission denied\n".encode()
    )
    script.chmod(0o755)  # executable, but neither ELF nor #!: execve refuses it
    done = run([], str(script), ["plain"])
    assert (done.returncode, done.stderr) == (
        126, f"jobd-shim: cannot execute {script}: Exec format error\n".encode()
    )


@pytest.mark.parametrize("args", [[], ["--"], ["--", "/bin/true"], ["{tmp}/cgroup.procs"]])
def test_the_compiled_shim_refuses_a_command_line_without_a_command(
    compiled_shim: str, args: list[str], tmp_path: Path
) -> None:
    (tmp_path / "cgroup.procs").touch()
    argv = [compiled_shim, *(a.format(tmp=tmp_path) for a in args)]
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert done.returncode == shim.JOIN_FAILED
    assert done.stderr.startswith(b"jobd-shim: usage: ")


def test_the_compiled_shim_writes_into_no_file_but_a_cgroup_procs(
    compiled_shim: str, tmp_path: Path
) -> None:
    # Run as root, it must not be made to write a pid over another file by a wrong command line.
    other = tmp_path / "cgroup.procs.bak"
    other.write_bytes(b"kept")
    done = subprocess.run([compiled_shim, str(other), "--", "/bin/true", "true"],
                          capture_output=True, timeout=30, check=False)
    assert done.returncode == shim.JOIN_FAILED
    assert done.stderr == f"jobd-shim: not a cgroup.procs file: {other}: Invalid argument\n".encode(
    )
    assert other.read_bytes() == b"kept"


def test_a_missing_compiled_shim_means_the_sh_one(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shim, "COMPILED", tmp_path / "jobd-shim")
    assert shim.compiled() is None
    program, argv = shim.shim_command([Path("/x/cgroup.procs")], "/bin/true", ["true"])
    assert program == SHELL
    assert argv == [SHELL, "-c", shim.SH_SCRIPT, "jobd-shim", "/x/cgroup.procs", "--", "true"]
    assert "/bin/sh" in shim.describe() and "not built" in shim.describe()


def test_a_compiled_shim_that_fails_its_trial_is_not_used(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    broken = tmp_path / "jobd-shim"
    broken.write_text("#!/bin/sh\necho wrong machine >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(shim, "COMPILED", broken)
    with caplog.at_level(logging.WARNING, logger="jobd.cgroups.shim"):
        assert shim.compiled() is None
    assert "failed its trial run (exit 1, wrote '': wrong machine)" in caplog.text
    assert shim.shim_command([], "/bin/true", ["true"])[0] == SHELL
