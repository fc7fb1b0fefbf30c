"""A job's working directory and program are used by its launcher as its account, after it
dropped to it: the kernel decides, and a failure says so in the job's words."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_launch import NOBODY, message, run

from jobd.jobs.supervisor import job_environment
from jobd.launch.system import SYSTEM_PATH
from jobd.policy.accounts import lookup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch accounts")
AS_NOBODY = ["-u", str(NOBODY), "-g", str(NOBODY)]
WHO = " (as nobody)"


@pytest.fixture
def launcher(compiled_launcher: str) -> str:
    return compiled_launcher


def script(path: Path, mode: int) -> Path:
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(mode)
    return path


def test_a_program_only_root_may_run_is_refused_for_the_account(launcher: str,
                                                                shared: Path) -> None:
    program = str(script(shared / "tool", 0o700))
    assert run(launcher, [], [program]).stdout == b"hi\n"
    result = run(launcher, AS_NOBODY, [program])
    assert message(result, program, who=WHO) == (
        f"cannot execute {program!r}: permission denied{WHO}")


def test_a_program_in_a_directory_the_account_cannot_enter(launcher: str, shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    program = script(private / "tool", 0o755)
    result = run(launcher, AS_NOBODY, [str(program)])
    assert message(result, str(program), who=WHO).endswith(f"permission denied{WHO}")
    # Looked up in PATH: as execvp says it, found but forbidden.
    result = run(launcher, [*AS_NOBODY, "-p", f"{private}:/nonexistent"], ["tool"])
    assert message(result, "tool", who=WHO) == (
        f"cannot execute 'tool': permission denied ({program}){WHO}")


def test_a_program_the_account_may_run_but_not_read_is_fine(launcher: str,
                                                            shared: Path) -> None:
    program = shared / "true"
    shutil.copy("/bin/true", program)
    program.chmod(0o711)  # execute only: nothing reads it but the kernel
    result = run(launcher, AS_NOBODY, [str(program)])
    assert (result.returncode, result.report) == (0, b"")


def test_path_lookup_skips_what_the_account_cannot_reach(launcher: str, shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    (private / "tool").write_text("#!/bin/sh\necho private\n")
    (private / "tool").chmod(0o755)
    public = shared / "public"
    public.mkdir(mode=0o755)
    (public / "tool").write_text("#!/bin/sh\necho public\n")
    (public / "tool").chmod(0o755)
    search = ["-p", f"{private}:{public}"]
    assert run(launcher, search, ["tool"]).stdout == b"private\n"
    assert run(launcher, [*AS_NOBODY, *search], ["tool"]).stdout == b"public\n"


def test_a_working_directory_the_account_cannot_enter(launcher: str, shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    assert run(launcher, ["-d", str(private)], ["/bin/true"]).returncode == 0
    result = run(launcher, [*AS_NOBODY, "-d", str(private)], ["/bin/true"])
    assert message(result, "/bin/true", str(private), WHO) == (
        f"working directory {str(private)!r} is not accessible (permission denied){WHO}")
    inner = private / "inner"
    inner.mkdir(mode=0o755)
    result = run(launcher, [*AS_NOBODY, "-d", str(inner)], ["/bin/true"])
    assert "is not accessible" in message(result, "/bin/true", str(inner), WHO)
    assert run(launcher, [*AS_NOBODY, "-d", str(shared)], ["/bin/true"]).returncode == 0
    result = run(launcher, [*AS_NOBODY, "-d", str(shared / "missing")], ["/bin/true"])
    assert "does not exist" in message(result, "/bin/true", str(shared / "missing"), WHO)


def test_the_directory_is_entered_before_the_program_is_looked_for(launcher: str,
                                                                   shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    tool = str(script(shared / "tool", 0o755))
    result = run(launcher, [*AS_NOBODY, "-d", str(private)], [tool])
    assert result.failure is not None and result.failure.step == "cwd"
    assert run(launcher, [*AS_NOBODY, "-d", str(shared), "-p", SYSTEM_PATH],
               [tool]).stdout == b"hi\n"  # fmt: skip


def test_the_accounts_environment() -> None:
    env = job_environment("j1", {"HOME": "/srv"}, lookup("root"))
    assert env["USER"] == env["LOGNAME"] == "root"
    assert env["HOME"] == "/srv"  # the request wins
    assert job_environment("j1", {}, lookup("65534:65534"))["HOME"] == "/"
