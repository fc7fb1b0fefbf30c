"""A job's working directory and program are checked as its account would see them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jobd import impersonate
from jobd.accounts import lookup
from jobd.errors import SpawnFailed
from jobd.supervisor import DENIED, job_environment, resolve_executable
from jobd.system import SYSTEM_PATH

pytestmark = pytest.mark.skipif(not impersonate.available(), reason="needs root")
NOBODY = lookup("65534:65534")
TRUE = "/bin/true"  # a program anyone may run: these tests are about the directory


def script(path: Path, mode: int) -> Path:
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(mode)
    return path


def test_a_program_only_root_may_run_is_refused_for_the_account(shared: Path) -> None:
    program = script(shared / "tool", 0o700)
    assert resolve_executable(str(program), SYSTEM_PATH, "/") == str(program)
    with pytest.raises(SpawnFailed) as info:
        resolve_executable(str(program), SYSTEM_PATH, "/", NOBODY)
    denied = f"cannot execute {str(program)!r}: permission denied (as {NOBODY.name})"
    assert str(info.value) == denied


def test_a_program_in_a_directory_the_account_cannot_enter(shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    program = script(private / "tool", 0o755)
    with pytest.raises(SpawnFailed, match="permission denied"):
        resolve_executable(str(program), SYSTEM_PATH, "/", NOBODY)
    # Looked up in PATH: found but forbidden, as execvp would say.
    with pytest.raises(SpawnFailed) as info:
        resolve_executable("tool", f"{private}:/nonexistent", "/", NOBODY)
    assert str(info.value).endswith(f"permission denied ({program}) (as {NOBODY.name})")


def test_a_program_the_account_may_run_but_not_read_is_fine(shared: Path) -> None:
    program = shared / "true"
    shutil.copy("/bin/true", program)
    program.chmod(0o711)  # execute only: the format check reads it as the daemon
    assert resolve_executable(str(program), SYSTEM_PATH, "/", NOBODY) == str(program)


def test_path_lookup_skips_what_the_account_cannot_reach(shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    script(private / "tool", 0o755)
    public = shared / "public"
    public.mkdir(mode=0o755)
    found = script(public / "tool", 0o755)
    search = f"{private}:{public}"
    assert resolve_executable("tool", search, "/") == str(private / "tool")
    assert resolve_executable("tool", search, "/", NOBODY) == str(found)


def test_a_working_directory_the_account_cannot_enter(shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    resolve_executable(TRUE, SYSTEM_PATH, str(private))
    with pytest.raises(SpawnFailed) as info:
        resolve_executable(TRUE, SYSTEM_PATH, str(private), NOBODY)
    assert str(info.value) == (
        f"working directory {str(private)!r} is not accessible (permission denied) "
        f"(as {NOBODY.name})"
    )
    inner = private / "inner"
    inner.mkdir(mode=0o755)
    with pytest.raises(SpawnFailed, match="is not accessible"):
        resolve_executable(TRUE, SYSTEM_PATH, str(inner), NOBODY)
    resolve_executable(TRUE, SYSTEM_PATH, str(shared), NOBODY)
    with pytest.raises(SpawnFailed, match="does not exist"):
        resolve_executable(TRUE, SYSTEM_PATH, str(shared / "missing"), NOBODY)


def test_the_accounts_environment() -> None:
    env = job_environment("j1", {"HOME": "/srv"}, lookup("root"))
    assert env["USER"] == env["LOGNAME"] == "root"
    assert env["HOME"] == "/srv"  # the request wins
    assert job_environment("j1", {}, NOBODY)["HOME"] == "/"


def test_one_switch_checks_the_directory_first_then_the_program(shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    tool = script(shared / "tool", 0o755)
    with pytest.raises(SpawnFailed, match=r"working directory .* is not accessible"):
        resolve_executable(str(tool), SYSTEM_PATH, str(private), NOBODY)
    assert resolve_executable(str(tool), SYSTEM_PATH, str(shared), NOBODY) == str(tool)
    forbidden = script(private / "tool", 0o755)
    with pytest.raises(SpawnFailed, match=f"cannot execute .*: {DENIED} \\(as {NOBODY.name}\\)"):
        resolve_executable(str(forbidden), SYSTEM_PATH, str(shared), NOBODY)
    assert os.geteuid() == 0  # the daemon's own ids are back
