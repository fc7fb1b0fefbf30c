"""jobctl's arguments: parsing, HOST:PORT, and limit values in the grammar jobd's config uses."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobctl import cli, units
from jobctl.client import (
    AddressError,
    parse_server,
)
from jobd.v1 import jobs_pb2 as pb

# --- argument parsing -------------------------------------------------------------------------


def parse(*argv: str, environ: dict[str, str] | None = None) -> Any:
    return cli.build_parser(environ or {}).parse_args(argv)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["sleep 2"], ["sleep", "2"]),
        (["--", "sleep 2"], ["sleep", "2"]),
        (["sh -c 'echo hi; exit 3'"], ["sh", "-c", "echo hi; exit 3"]),
        (["'/opt/my tool' -v"], ["/opt/my tool", "-v"]),
        (["sleep"], ["sleep"]),
        (["--", "ls", "-l", "--", "x"], ["ls", "-l", "--", "x"]),
        (["echo", "a b"], ["echo", "a b"]),  # several words: never split further
        (["--", "--", "x"], ["--", "x"]),
    ],
)
def test_command_argv(words: list[str], expected: list[str]) -> None:
    assert cli.command_argv(words) == expected


@pytest.mark.parametrize("words", [[], ["--"], ["   "], ["sleep 'unterminated"]])
def test_command_argv_rejects(words: list[str]) -> None:
    with pytest.raises(ValueError, match=r"no command|cannot split"):
        cli.command_argv(words)


def test_start_arguments() -> None:
    words = "start --env A=1 --env B=x=y --env C= --cwd /tmp -- ls -l --env"
    args = parse(*shlex.split(words))
    assert args.command == "start"
    assert args.argv == ["ls", "-l", "--env"]
    assert dict(args.env) == {"A": "1", "B": "x=y", "C": ""}
    assert args.cwd == "/tmp"


def test_start_single_argument_is_split_without_dashes() -> None:
    args = parse("--cacert", "ca/ca.crt", "--cert", "ca/client_0.pem", "start", "sleep 2")
    assert args.argv == ["sleep", "2"]
    assert (args.cacert, args.cert) == ("ca/ca.crt", "ca/client_0.pem")


MiB = 2**20


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (units.parse_cpu, "0.5", 0.5),
        (units.parse_cpu, "50%", 0.5),
        (units.parse_cpu, "500m", 0.5),
        (units.parse_cpu, "2", 2.0),
        (units.parse_cpu, " 1.5 ", 1.5),
        (units.parse_cpu, "250%", 2.5),
        (units.parse_size, "256M", 256 * MiB),
        (units.parse_size, "1G", 2**30),
        (units.parse_size, "512K", 512 * 1024),
        (units.parse_size, "512k", 512 * 1024),
        (units.parse_size, "1048576", MiB),
        (units.parse_size, "1.5G", 3 * 2**29),
        (units.parse_size, "0.5K", 512),
        (units.parse_size, "1GiB", 2**30),
        (units.parse_size, "64MB", 64 * MiB),
        (units.parse_size, "100B", 100),
        (units.parse_size, "2T", 2 * 2**40),
        (units.parse_size, "256 M", 256 * MiB),
        (units.parse_size, str(2**64 - 1), 2**64 - 1),
        (units.parse_size, "0.1K", None),  # 102.4 bytes
        (units.parse_rate, "10M/s", 10 * MiB),
        (units.parse_rate, "10MiB/s", 10 * MiB),
        (units.parse_rate, "4096", 4096),
        (units.parse_count, "64", 64),
        (units.parse_count, str(2**32 - 1), 2**32 - 1),
        (units.parse_device, "254:0", "254:0"),
        (units.parse_device, "/dev/sda", "/dev/sda"),
        (units.parse_device, "/var/lib/jobd", "/var/lib/jobd"),
    ],
)
def test_limit_values(parse: Any, text: str, value: Any) -> None:
    if value is None:
        with pytest.raises(ValueError, match="not a whole number of bytes"):
            parse(text)
    else:
        assert parse(text) == value


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cpu", "0", "invalid CPU limit '0': must be more than 0"),
        ("--cpu", "-1", "invalid CPU limit '-1': must be more than 0"),
        ("--cpu", "0%", "invalid CPU limit '0%': must be more than 0"),
        ("--cpu", "nan", "invalid CPU limit 'nan': must be more than 0"),
        ("--cpu", "inf", "invalid CPU limit 'inf': must be more than 0"),
        ("--cpu", "half", "invalid CPU limit 'half': expected cores such as 0.5, 50% or 500m"),
        ("--cpu", "", "invalid CPU limit ''"),
        ("--cpu", "1 core", "invalid CPU limit '1 core'"),
        ("--memory", "0", "invalid size '0': must be more than 0"),
        ("--memory", "0M", "invalid size '0M': must be more than 0"),
        ("--memory", "-1M", "invalid size '-1M': expected bytes with an optional K, M, G or T"),
        ("--memory", "12X", "invalid size '12X': expected bytes"),
        ("--memory", "1.5", "invalid size '1.5': not a whole number of bytes"),
        ("--memory", "M", "invalid size 'M': expected bytes"),
        ("--memory", "1e6", "invalid size '1e6': expected bytes"),
        ("--memory", str(2**64), f"invalid size '{2**64}': too large"),
        ("--memory", "16777216T", "invalid size '16777216T': too large"),
        ("--io-read-bps", "0", "invalid size '0': must be more than 0"),
        ("--io-write-bps", "fast", "invalid size 'fast'"),
        ("--io-write-bps", "10M/min", "invalid size '10M/min'"),
        ("--io-device", "sda", "invalid device 'sda': expected MAJOR:MINOR (e.g. 8:0) or an abs"),
        ("--io-device", "", "invalid device ''"),
        ("--io-device", "8:", "invalid device '8:'"),
        ("--pids", "0", f"invalid number '0': expected 1 to {2**32 - 1}"),
        ("--pids", "-5", "invalid number '-5'"),
        ("--pids", str(2**32), f"invalid number '{2**32}'"),
        ("--pids", "many", "invalid number 'many': expected a whole number"),
        ("--pids", "1.5", "invalid number '1.5': expected a whole number"),
    ],
)
def test_bad_limit_values_are_usage_errors(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server anywhere: the value is refused before a connection would be made.
    environ = {"JOBCTL_SERVER": "127.0.0.1:1", "JOBCTL_CACERT": "/nonexistent"}
    assert cli._main(["start", f"{option}={value}", "--", "true"], environ=environ) == 2
    out, err = capsys.readouterr()
    assert out == ""
    last = err.splitlines()[-1]
    assert last.startswith(f"jobctl start: error: argument {option}: {message}"), err
    assert "Traceback" not in err


def limits_request(*words: str) -> pb.Limits:
    from jobctl.commands import limits_of

    args = parse("start", *words, "--", "true")
    assert args.argv == ["true"]
    limits: pb.Limits = limits_of(args)
    return limits


def test_limit_options_build_the_request() -> None:
    limits = limits_request(
        "--cpu", "500m", "--memory", "256M", "--io-read-bps", "10M", "--io-write-bps", "1M/s",
        "--io-device", "254:0", "--pids", "64",
    )  # fmt: skip
    assert limits == pb.Limits(
        cpu=0.5,
        memory_bytes=256 * MiB,
        io_read_bps=10 * MiB,
        io_write_bps=MiB,
        io_device="254:0",
        pids=64,
    )
    # What is not given stays unset: the server's default applies.
    limits = limits_request("--memory", "1G")
    assert limits.memory_bytes == 2**30
    for unset in ("cpu", "io_read_bps", "io_write_bps", "pids"):
        assert not limits.HasField(unset)
    assert limits.io_device == ""
    assert limits_request() == pb.Limits()
    # The last of a repeated option wins, as with every other option.
    assert limits_request("--pids", "5", "--pids", "7").pids == 7


def test_start_help_lists_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["start", "--help"], environ={}) == cli.EXIT_OK
    out = capsys.readouterr().out
    for option in ("--cpu CORES", "--memory SIZE", "--io-read-bps SIZE", "--io-write-bps SIZE"):
        assert option in out
    assert "--io-device DEV" in out and "--pids N" in out
    assert "50%, 500m" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "--env", "FOO", "--", "true"], "expected KEY=VALUE, got 'FOO' (no '=')"),
        (["start", "--env", "=x", "--", "true"], "empty KEY"),
        (["start"], "no command given"),
        (["start", "--", "a 'b"], "cannot split"),
        (["stop", "--grace", "-1", "x"], "expected zero or more seconds"),
        (["stop", "--grace", "soon", "x"], "not a number of seconds"),
        (["stop", "--grace", "nan", "x"], "expected zero or more seconds"),
        (["status"], "the following arguments are required: ID"),
        (["list", "--limit", "0"], "expected 1 or more, got '0'"),
        (["list", "--limit", "x"], "not a whole number: 'x'"),
        (["list", "--limit", "5", "--all"], "not allowed with argument"),
        (["logs", "--stdout", "--stderr", "j1"], "not allowed with argument"),
        (["logs", "--tail", "2", "--offset", "9", "j1"], "not allowed with argument"),
        (["logs", "--tail", "0", "j1"], "expected 1 or more"),
        (["logs", "--tail", str(2**32), "j1"], "expected at most 4294967295 lines"),
        (["logs", "--offset", "-1", "j1"], "expected an offset of 0 or more"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(argv, environ={}) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def options(args: Any) -> tuple[str, str, str, str | None]:
    return (args.server, args.cacert, args.cert, args.key)


def test_global_defaults_and_environment() -> None:
    assert options(parse("list")) == ("localhost:9090", "ca/ca.crt", "ca/client_0.pem", None)
    environ = {
        "JOBCTL_SERVER": "[::1]:7000",
        "JOBCTL_CACERT": "c.crt",
        "JOBCTL_CERT": "me.crt",
        "JOBCTL_KEY": "me.key",
    }
    assert options(parse("list", environ=environ)) == ("[::1]:7000", "c.crt", "me.crt", "me.key")
    args = parse("--server", "h:1", "--key", "k", "list", environ=environ)
    assert options(args) == ("h:1", "c.crt", "me.crt", "k")


def test_other_commands_parse() -> None:
    assert parse("stop", "--grace", "2.5", "j1").grace == 2.5
    assert parse("stop", "j1").grace is None
    assert parse("status", "--json", "j1").json
    args = parse("list", "--owner", "bob", "--json")
    assert (args.owner, args.json, args.limit, args.all) == ("bob", True, 50, False)
    assert parse("list", "--limit", "7").limit == 7
    assert parse("list", "--all").all
    args = parse("logs", "j1")
    assert (args.follow, args.only, args.tail, args.offset) == (False, None, 0, 0)
    args = parse("logs", "-f", "--stderr", "--tail", "3", "j1")
    assert (args.follow, args.only, args.tail, args.offset) == (True, "stderr", 3, 0)
    args = parse("logs", "--stdout", "--offset", "123", "-f", "j1")
    assert (args.follow, args.only, args.tail, args.offset) == (True, "stdout", 0, 123)


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["--help"], environ={}) == cli.EXIT_OK
    out = capsys.readouterr().out
    for code in (0, 1, 2, 3, 130, 141):
        assert f"\n  {code} " in out
    assert "JOBCTL_SERVER" in out


# --- HOST:PORT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:9090", ("localhost", 9090)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:9090", ("::1", 9090)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
        ("example.com", ("example.com", 9090)),
        ("[::1]", ("::1", 9090)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":9090",
        "::1:9090",
        "[::1",
        "[::1]9090",
        "[nope]:1",
        "host:",
        "host:0",
        "host:65536",
        "host:http",
        "host:-1",
        "host:\uff19\uff10",
        " host:1",
    ],
)
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(AddressError, match="invalid server address"):
        parse_server(text)




# --- limit values: the same grammar as jobd's config -------------------------------------------

limit_text = st.text(alphabet="0123456789.kKmMgGtTiIbB% /s-e", max_size=9)
size_text = st.builds(
    "{}{}{}{}{}".format,
    st.integers(min_value=0, max_value=10**6).map(str),
    st.sampled_from(["", ".", ".5", ".25", ".1", ".0625", ".3"]),
    st.sampled_from(["", " "]),
    st.sampled_from(["", "k", "K", "m", "M", "g", "G", "t", "T"]),
    st.sampled_from(["", "b", "B", "ib", "iB"]),
)


def outcome(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        return ValueError


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(limit_text, size_text))
def test_sizes_parse_as_jobd_parses_them(text: str) -> None:
    """jobctl copies jobd's size grammar; it refuses 0 and what a uint64 cannot hold."""
    from jobd.model import units as jobd_units
    theirs, mine = outcome(jobd_units.parse_size, text), outcome(units.parse_size, text)
    if theirs is ValueError or theirs == 0:
        assert mine is ValueError
    elif theirs < 2**50:  # beyond, jobd's float arithmetic rounds
        assert mine == theirs


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(limit_text, st.floats().map(str), st.floats().map(lambda f: f"{f}%")))
def test_cpu_parses_as_jobd_parses_it(text: str) -> None:
    from jobd.model import units as jobd_units
    assert outcome(units.parse_cpu, text) == outcome(jobd_units.parse_cpu, text)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (256 * MiB, "256 MiB"),
        (round(12.3 * MiB), "12.3 MiB"),
        (2**40, "1 TiB"),
        (2**50, "1024 TiB"),
    ],
)
def test_format_size_words_sizes_as_jobd_does(n: int, text: str) -> None:
    from jobd.model import units as jobd_units
    assert units.format_size(n) == text == jobd_units.format_size(n)


