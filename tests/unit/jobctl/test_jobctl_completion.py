"""``jobctl completion bash|zsh``: complete, valid, and completing what it should."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobctl import cli

COMMANDS = ["start", "run", "stop", "status", "list", "top", "config", "completion", "logs"]


def script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli._main(["completion", shell], environ={}) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    return out


def every_option() -> dict[str, list[str]]:
    """The long options of each command, from the parser itself."""
    import argparse

    parser = cli.build_parser({})
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found = {"": [o for a in parser._actions for o in a.option_strings]}
    for name, command in sub.choices.items():
        found[name] = [o for a in command._actions for o in a.option_strings]
    return found


def test_the_commands_are_all_there() -> None:
    assert set(every_option()) - {""} == set(COMMANDS)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_mentions_every_command_and_option(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = script(shell, capsys)
    for command in COMMANDS:
        assert f'"{command}")' in text or f'("{command}")' in text, command
    for options in every_option().values():
        for option in options:
            assert re.search(rf"(?<![\w-]){option}(?![\w-])", text), option
    assert "contexts" in text


def test_the_bash_script_is_valid_bash(capsys: pytest.CaptureFixture[str]) -> None:
    result = subprocess.run(
        ["bash", "-n"], input=script("bash", capsys).encode(), capture_output=True
    )
    assert (result.returncode, result.stderr) == (0, b""), result


def complete(text: str, line: str, cwd: Path) -> list[str]:
    """What the bash script offers for ``line`` (the word under the cursor is the last)."""
    words = line.split(" ")
    program = (
        f"{text}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
        "_jobctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", program, "bash", *words],
        capture_output=True,
        check=True,
        text=True,
        cwd=cwd,
    )
    return sorted(filter(None, result.stdout.split("\n")))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("jobctl ", sorted(COMMANDS)),
        ("jobctl st", ["start", "status", "stop"]),
        ("jobctl --server h:1 --context dev l", ["list", "logs"]),
        ("jobctl --ser", ["--server"]),
        ("jobctl run --de", ["--detach-on-interrupt"]),
        ("jobctl top --", ["--help", "--interval", "--json", "--once", "--owner"]),
        ("jobctl config ", ["contexts"]),
        ("jobctl config contexts --", ["--help", "--json"]),
        ("jobctl completion ", ["bash", "zsh"]),
        ("jobctl run --memory ", []),
        ("jobctl logs ID --f", ["--follow"]),
        ("jobctl start -- sleep 5", []),
    ],
)
def test_bash_completes(
    line: str, expected: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert complete(script("bash", capsys), line, tmp_path) == expected


def test_bash_completes_file_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "client.pem").touch()
    (tmp_path / "other").touch()
    text = script("bash", capsys)
    assert complete(text, "jobctl --cert cl", tmp_path) == ["client.pem"]
    assert complete(text, "jobctl run -- ot", tmp_path) == ["other"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_is_valid_zsh(capsys: pytest.CaptureFixture[str]) -> None:
    result = subprocess.run(
        ["zsh", "-n"], input=script("zsh", capsys).encode(), capture_output=True
    )
    assert (result.returncode, result.stderr) == (0, b""), result


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["completion", "fish"], environ={}) == cli.EXIT_USAGE
    assert "invalid choice: 'fish'" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_registers_itself(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "_jobctl").write_text(script("zsh", capsys))
    program = (
        "autoload -U compinit && compinit -u -d $1/zcompdump\n"
        "source $1/_jobctl\n"
        "print -r -- ${_comps[jobctl]}\n"
    )
    result = subprocess.run(
        ["zsh", "-f", "-c", program, "zsh", str(tmp_path)], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "_jobctl\n", ""), result
