"""What jobctl imports at start-up, by command: what it does not use stays out."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_unit import run_python

from jobctl import cli

REPO = Path(__file__).resolve().parents[3]




# --- start-up cost -----------------------------------------------------------------------------


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys, jobctl.cli\n"
        "code = jobctl.cli._main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    {'trio', 'trio_asyncio', 'grpclib', 'google', 'asyncio', 'h2', 'ssl'})\n"
        "print(code, heavy, file=sys.stderr)\n"
    )
    result = run_python(code)
    assert result.stderr.strip() == "0 []", result.stderr


def test_commands_never_import_trio() -> None:
    code = (
        "import sys, jobctl.cli\n"
        "code = jobctl.cli._main(['--server', '127.0.0.1:1', '--cacert', 'missing', 'list'])\n"
        "import jobctl.commands\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('trio')), file=sys.stderr)\n"
        "allowed = {'jobd.api', 'jobd.api.tls', 'jobd.api.grpclib_private',\n"
        "           'jobd.v1', 'jobd.v1.jobs_pb2', 'jobd.v1.jobs_grpc'}\n"
        "print([m for m in sys.modules if m.startswith('jobd.') and m not in allowed],\n"
        "      file=sys.stderr)\n"
    )
    result = run_python(code)
    assert result.stderr.splitlines()[-2:] == ["2 []", "[]"], result.stderr


def test_status_imports_only_what_it_needs(tmp_path: Path) -> None:
    # No config file: tomllib stays out; no --json: json stays out; no table: shutil stays out
    # (argparse's own formatter would import it, jobctl's does not).
    code = (
        "import os, sys, jobctl.cli\n"
        f"os.environ['XDG_CONFIG_HOME'] = {str(tmp_path)!r}\n"
        "code = jobctl.cli._main(['--server', '127.0.0.1:1', '--cacert', 'missing', 'status',\n"
        "                         'j1'])\n"
        "assert 'jobd.v1.jobs_pb2' in sys.modules  # it got as far as the client\n"
        "unwanted = {'tomllib', 'json', 'shutil', 'google.protobuf.json_format', 'trio'}\n"
        "print(code, sorted(unwanted & set(sys.modules)), file=sys.stderr)\n"
    )
    result = run_python(code)
    assert result.stderr.splitlines()[-1] == "2 []", result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "j1"],
        ["--server", "h:1", "status", "--json", "-w", "--interval", "0.5", "j1"],
        ["start", "--cpu", "50%", "--isolate", "pid,net", "--env", "A=1", "--", "sleep 2"],
        ["run", "--detach-on-interrupt", "--memory", "1G", "true"],
        ["stop", "--grace", "2", "--json", "j1"],
        ["list", "--all", "--owner", "bob"],
        ["top", "--once"],
        ["logs", "-f", "--stderr", "--tail", "3", "j1"],
        ["config", "contexts", "--json"],
        ["completion", "zsh"],
    ],
)
def test_lazy_parser_parses_like_the_full_one(argv: list[str]) -> None:
    full = vars(cli.build_parser({}).parse_args(argv))
    assert vars(cli.build_parser({}, lazy=True).parse_args(argv)) == full
    assert vars(cli.build_parser({}, lazy=True, argv=argv).parse_args(argv)) == full


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["status", "j1"], "status"),
        (["--server", "h:1", "--cert=c.pem", "logs", "-f", "j1"], "logs"),
        (["--serv", "h:1", "list"], "list"),  # argparse takes unambiguous abbreviations
        (["--server", "status", "list"], "list"),  # a value that looks like a command
        (["--context=status", "stop", "j1"], "stop"),
        (["--help"], None),
        (["-h", "status"], None),
        (["--no-such-option", "status"], None),
        (["--", "status"], None),
        (["stats", "j1"], None),
        ([], None),
    ],
)
def test_command_named_reads_only_what_is_plain(argv: list[str], named: str | None) -> None:
    assert cli.command_named(argv) == named


def test_command_named_knows_every_command_and_value_option() -> None:
    parser = cli.build_parser({})
    [commands] = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(cli.COMMANDS) == set(commands)
    takes_value = {o for a in parser._actions if a.nargs != 0 and a.option_strings
                   for o in a.option_strings}
    assert set(cli._GLOBAL_VALUE_OPTIONS) == takes_value


@pytest.mark.parametrize(
    "argv",
    [["--serv", "h:1", "status", "--no-such-option", "j1"], ["--c", "x", "status", "j1"],
     ["status"], ["logs", "--help"]],
)
def test_parser_of_one_command_reports_like_the_whole(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    outputs = []
    for only in (False, True):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser({}, lazy=True, argv=argv if only else None).parse_args(argv)
        outputs.append((exc.value.code, capsys.readouterr()))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        *(
            [command]
            for command in ("start", "run", "stop", "status", "list", "top", "config", "logs")
        ),
        ["completion"],
        ["config", "contexts"],
    ],
)
def test_lazy_parser_helps_like_the_full_one(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    outputs = []
    for lazy in (False, True):
        for tail in (["--help"], ["--no-such-option"]):
            with pytest.raises(SystemExit):
                cli.build_parser({}, lazy=lazy).parse_args([*argv, *tail])
            outputs.append(capsys.readouterr())
    assert outputs[:2] == outputs[2:]
    assert "usage: jobctl" in outputs[0].out


def test_lazy_parser_adds_only_the_arguments_of_the_command_used() -> None:
    parser = cli.build_parser({}, lazy=True)
    parser.parse_args(["status", "j1"])
    [commands] = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {a.dest for a in commands["status"]._actions} >= {"id", "watch", "json"}
    assert [a.dest for a in commands["logs"]._actions] == ["help"]


def test_console_script_exit_flushes_and_runs_atexit() -> None:
    # main() leaves through os._exit (no interpreter finalization): what it printed must
    # still arrive whole, and atexit handlers must still run.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        "sys.argv = ['jobctl', '--help']\n"
        "from jobctl.cli import main\n"
        "main()\n"
    )
    result = run_python(code)
    assert result.returncode == cli.EXIT_OK
    assert result.stderr == "atexit ran\n"
    assert result.stdout.startswith("usage: jobctl")
    assert result.stdout.endswith("keep the codes above.\n")


def test_console_script_exit_waits_for_a_running_thread() -> None:
    code = (
        "import threading, time\n"
        "from jobctl import cli\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "cli._exit(3)\n"
    )
    result = run_python(code)
    assert (result.returncode, result.stdout) == (3, "thread done\n")


def test_help_into_a_closed_pipe() -> None:
    read, write = os.pipe()
    os.close(read)  # closed before jobctl writes a byte
    # Buffered stdout, as usual: unbuffered, argparse's own write fails and argparse ignores it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "jobctl", "--help"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (cli.EXIT_BROKEN_PIPE, "")


