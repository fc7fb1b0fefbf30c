"""The innermost links of a job's spawn chain as another account: setpriv and the loader."""

from __future__ import annotations

import os
import subprocess

import pytest

from jobd import impersonate, privdrop
from jobd.accounts import lookup

ENV_DUMP = ["/usr/bin/env", "-0"]
VALUES = {
    "PLAIN": "plain-value-1",
    "EMPTY": "",
    "QUOTES": "it's \"quoted\" $HOME `id` $(id) \\ \n two lines",
    "PATH": "/usr/bin:/bin",
    "LD_PRELOAD": "/nonexistent/jobd-test.so",
    # A requested name that is itself the prefixed copy of another requested name.
    "JOBD_ENV_PLAIN": "prefixed-value-2",
}


def env_of(output: bytes) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in output.decode().split("\0") if item)
    return {k: v for k, v in pairs}


def test_the_loader_gives_every_variable_its_name_and_value_back() -> None:
    base = {"PATH": "/sbin", "HOME": "/", "KEEP": "1"}
    hidden = privdrop.hidden_environment(base, VALUES)
    assert "LD_PRELOAD" not in hidden and "QUOTES" not in hidden
    assert hidden["JOBD_ENV_LD_PRELOAD"] == VALUES["LD_PRELOAD"]
    for value in VALUES.values():  # values travel in the environment, never on a command line
        if value:
            assert all(value not in arg for arg in privdrop.loader(list(VALUES)))
    done = subprocess.run(
        [*privdrop.loader(list(VALUES)), *ENV_DUMP], env=hidden, capture_output=True, check=True
    )
    env = env_of(done.stdout)
    env.pop("PWD", None)  # the shell's own; the cgroup shim adds it too
    assert env == {"HOME": "/", "KEEP": "1", **VALUES}
    # The preload was not in the loader's environment, only in the command's.
    assert done.stderr.count(b"LD_PRELOAD cannot be preloaded") == 1


@pytest.mark.parametrize("name", ["PATH", "A1", "_x", "lower_case"])
def test_shell_names_are_valid(name: str) -> None:
    assert privdrop.NAME.match(name)


@pytest.mark.parametrize("name", ["", "1A", "A-B", "a.b", "A=B", "A B", "A\n"])
def test_other_names_are_not(name: str) -> None:
    assert not privdrop.NAME.match(name)


@pytest.mark.skipif(not impersonate.available(), reason="needs root")
@pytest.mark.skipif(privdrop.find_setpriv() is None, reason="needs setpriv (util-linux)")
def test_setpriv_drops_to_the_account_with_no_way_back() -> None:
    setpriv = privdrop.find_setpriv()
    assert setpriv is not None
    script = "id -u; id -g; id -G; grep -E '^(NoNewPrivs|Cap...):' /proc/self/status"
    argv = [*privdrop.setpriv_args(setpriv, lookup("65534:65534")), "/bin/sh", "-c", script]
    out = subprocess.run(argv, capture_output=True, check=True, text=True).stdout.split("\n")
    assert out[:3] == ["65534", "65534", "65534"]
    status = dict(line.split(":\t") for line in out[3:] if line)
    assert status["NoNewPrivs"] == "1"
    for caps in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert int(status[caps], 16) == 0, caps


@pytest.mark.skipif(not impersonate.available(), reason="needs root")
@pytest.mark.skipif(privdrop.find_setpriv() is None, reason="needs setpriv (util-linux)")
def test_supplementary_groups_are_passed() -> None:
    setpriv = privdrop.find_setpriv()
    assert setpriv is not None
    account = lookup("65534:65534")
    account = type(account)(account.name, 65534, 65534, account.group, (61001, 61002))
    argv = [*privdrop.setpriv_args(setpriv, account), "/usr/bin/id", "-G"]
    out = subprocess.run(argv, capture_output=True, check=True, text=True).stdout.split()
    assert sorted(map(int, out)) == [61001, 61002, 65534]
    assert os.geteuid() == 0
