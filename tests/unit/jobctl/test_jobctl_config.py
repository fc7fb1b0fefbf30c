"""jobctl's config file and contexts, without a daemon (plus one run against a real one)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness import Daemon
from jobctl import cli, config

CONFIG = """\
current = "dev"

[contexts.dev]
server = "dev.example:9090"
cacert = "certs/ca.crt"
cert = "/abs/dev.pem"

[contexts.build-02]
server = "build-02:7000"
cert = "~/me.pem"
key = "me.key"
"""


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose default config file is ``tmp_path/xdg/jobctl/config.toml``."""
    (tmp_path / "xdg" / "jobctl").mkdir(parents=True)
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}


def write(env: dict[str, str], text: str) -> Path:
    path = Path(env["XDG_CONFIG_HOME"]) / "jobctl" / "config.toml"
    path.write_text(text)
    return path


def resolved(env: dict[str, str], *argv: str) -> tuple[Any, ...]:
    args = cli.build_parser(env).parse_args([*argv, "list"])
    cli._apply_context(args, env)
    return (args.server, args.cacert, args.cert, args.key)


def test_paths(home: dict[str, str], tmp_path: Path) -> None:
    assert config.default_path(home) == tmp_path / "xdg" / "jobctl" / "config.toml"
    assert config.default_path({"HOME": "/h"}) == Path("/h/.config/jobctl/config.toml")
    assert config.config_path(None, home) == (config.default_path(home), False)
    assert config.config_path(None, {**home, "JOBCTL_CONFIG": "/e.toml"}) == (
        Path("/e.toml"),
        True,
    )
    assert config.config_path("/f.toml", {"JOBCTL_CONFIG": "/e.toml"}) == (Path("/f.toml"), True)


def test_the_current_context_fills_what_is_not_given(home: dict[str, str]) -> None:
    path = write(home, CONFIG)
    folder = path.parent
    assert resolved(home) == ("dev.example:9090", f"{folder}/certs/ca.crt", "/abs/dev.pem", None)


def test_precedence_flags_then_environment_then_context_then_defaults(
    home: dict[str, str],
) -> None:
    folder = write(home, CONFIG).parent
    env = {**home, "JOBCTL_CONTEXT": "build-02", "JOBCTL_CERT": "env.pem"}
    # build-02 has no cacert: the default stays; JOBCTL_CERT beats the context's cert.
    assert resolved(env) == ("build-02:7000", "ca/ca.crt", "env.pem", f"{folder}/me.key")
    # A flag beats all of them, and --context beats JOBCTL_CONTEXT.
    assert resolved(env, "--server", "flag:1", "--context", "dev") == (
        "flag:1",
        f"{folder}/certs/ca.crt",
        "env.pem",
        None,
    )


def test_home_in_a_context_path(home: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", home["HOME"])
    write(home, CONFIG)
    assert resolved(home, "--context", "build-02")[2] == f"{home['HOME']}/me.pem"


def test_no_config_file_changes_nothing(home: dict[str, str]) -> None:
    assert resolved(home) == ("localhost:9090", "ca/ca.crt", "ca/client_0.pem", None)
    assert resolved({**home, "JOBCTL_SERVER": "e:1"})[0] == "e:1"


@pytest.mark.parametrize(
    ("text", "argv", "message"),
    [
        (CONFIG, ["--context", "nope"], "unknown context 'nope' in "),
        (None, ["--context", "nope"], "unknown context 'nope' (no config file at "),
        ("current = [", [], "invalid TOML"),
        ('current = "gone"\n', [], "current = 'gone' names no context (it defines none)"),
        ('server = "x:1"\n', [], "unknown setting(s) server"),
        ("[contexts.a]\nport = 1\n", ["--context", "a"], "contexts.a: unknown setting(s) port"),
        ("[contexts.a]\nserver = 1\n", [], "contexts.a.server must be a non-empty string"),
        ("contexts = 1\n", [], "contexts must be tables"),
    ],
)
def test_bad_files_and_unknown_contexts_are_usage_errors(
    home: dict[str, str],
    text: str | None,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if text is not None:
        write(home, text)
    assert cli._main([*argv, "list"], environ=home) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("jobctl: ") and err.count("\n") == 1, err
    assert message in err


def test_a_named_config_file_must_exist(
    home: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    for argv, env in (
        (["--config", str(missing)], home),
        ([], {**home, "JOBCTL_CONFIG": str(missing)}),
    ):
        assert cli._main([*argv, "list"], environ=env) == cli.EXIT_USAGE
        assert capsys.readouterr().err == f"jobctl: config file {missing}: not found\n"


def test_config_contexts(home: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    folder = write(home, CONFIG).parent
    assert cli._main(["config", "contexts"], environ=home) == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "CURRENT  NAME      SERVER",
        "         build-02  build-02:7000",
        "*        dev       dev.example:9090",
    ]
    assert cli._main(["--context", "build-02", "config", "contexts"], environ=home) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("*        build-02")
    assert cli._main(["config", "contexts", "--json"], environ=home) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["current"] == "dev"
    assert data["contexts"]["build-02"] == {
        "server": "build-02:7000",
        "cert": os.path.expanduser("~/me.pem"),
        "key": f"{folder}/me.key",
    }


def test_config_contexts_without_a_file(
    home: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli._main(["config", "contexts"], environ=home) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("jobctl: note: no contexts (config file: ")


@pytest.mark.e2e
def test_a_context_that_points_at_the_daemon(
    daemon: Daemon, home: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    certs = daemon.certs
    write(
        home,
        f'current = "wrong"\n'
        f'[contexts.wrong]\nserver = "127.0.0.1:1"\ncacert = "{certs.ca}"\n'
        f'cert = "{certs.client("client_1")}"\n'
        f'[contexts.test]\nserver = "{daemon.server}"\ncacert = "{certs.ca}"\n'
        f'cert = "{certs.client("client_1")}"\n',
    )
    assert cli._main(["--context", "test", "list", "--json"], environ=home) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
    env = {**home, "JOBCTL_CONTEXT": "test"}
    assert cli._main(["run", "--", "sh", "-c", "exit 4"], environ=env) == 4
    capsys.readouterr()
    assert cli._main(["list", "--json"], environ=env) == cli.EXIT_OK
    [job] = json.loads(capsys.readouterr().out)
    assert (job["owner"], job["result"]["exit_code"]) == ("client_1", 4)
    # The current context ("wrong") is used when none is named: it cannot connect.
    assert cli._main(["list"], environ=home) == cli.EXIT_CONNECT
    assert "127.0.0.1:1" in capsys.readouterr().err
