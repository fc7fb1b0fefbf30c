"""Configuration: listen addresses, the TOML file, flags over the file, the state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobd.config import (
    DEFAULT_MAX_OUTPUT,
    Config,
    ConfigError,
    default_state_dir,
    load,
    parse_hostport,
)
from jobd.policy.auth import DEFAULT_ROLES, Role


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("0.0.0.0:9090", ("0.0.0.0", 9090)),
        ("[::1]:9090", ("::1", 9090)),
        ("[::]:65535", ("::", 65535)),
        ("[::1]", ("::1", 9090)),
        ("localhost", ("localhost", 9090)),
        ("localhost:1", ("localhost", 1)),
        (":8080", ("0.0.0.0", 8080)),
        ("example.org:443", ("example.org", 443)),
    ],
)
def test_parse_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected


def test_parse_hostport_default_port() -> None:
    assert parse_hostport("localhost", default_port=1234) == ("localhost", 1234)
    assert parse_hostport("[::1]", default_port=1234) == ("::1", 1234)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("localhost:http", "listen address 'localhost:http': port 'http' is not a number"),
        ("localhost:65536", "listen address 'localhost:65536': port out of range"),
        ("localhost:-1", "listen address 'localhost:-1': port out of range"),
        ("[::1]:x", "listen address '[::1]:x': port 'x' is not a number"),
        ("[::1]:99999", "listen address '[::1]:99999': port out of range"),
        ("[::1", "listen address '[::1': missing ']'"),
        ("[::1:9090", "listen address '[::1:9090': missing ']'"),
        ("[::1]9090", "listen address '[::1]9090': expected ':' after ']'"),
    ],
)
def test_parse_hostport_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_hostport(value)
    assert str(info.value) == message


# --- the file ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobd.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = Config()
    assert config.listen == ("localhost", 9090)
    assert config.cacert == Path("ca/ca.crt")
    assert config.cert == Path("ca/server.pem")
    assert config.key is None
    assert config.grace == 10.0
    assert config.max_output == DEFAULT_MAX_OUTPUT == 1 << 30
    assert dict(config.roles) == dict(DEFAULT_ROLES)
    assert config.config_file is None
    assert config.state_dir == default_state_dir()


def test_file_sets_everything(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        listen = "[::1]:7000"
        cacert = "/etc/jobd/ca.crt"
        cert = "/etc/jobd/server.pem"
        key = "/etc/jobd/server.key"
        state_dir = "/srv/jobd"
        grace = 2
        max_output = "512M"

        [identities]
        client_0 = "admin"
        alice = "user"
        bob = "user"
        """,
    )
    config = Config()
    config.apply_file(path)
    assert config.listen == ("::1", 7000)
    assert config.cacert == Path("/etc/jobd/ca.crt")
    assert config.cert == Path("/etc/jobd/server.pem")
    assert config.key == Path("/etc/jobd/server.key")
    assert config.state_dir == Path("/srv/jobd")
    assert config.grace == 2.0 and isinstance(config.grace, float)
    assert config.max_output == 512 << 20
    # The file's table replaces the built-in one entirely: client_1 is gone.
    assert dict(config.roles) == {"client_0": Role.ADMIN, "alice": Role.USER, "bob": Role.USER}
    assert config.config_file == path


def test_empty_file_changes_nothing(tmp_path: Path) -> None:
    config = Config()
    config.apply_file(write(tmp_path, "# nothing\n"))
    expected = Config()
    expected.config_file = config.config_file
    assert config == expected


def test_empty_identities_table_refuses_everyone(tmp_path: Path) -> None:
    config = Config()
    config.apply_file(write(tmp_path, "[identities]\n"))
    assert dict(config.roles) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "x"\nport = 1\nverbose = true\n', "unknown setting(s) port, verbose"),
        ("[server]\nlisten = 'x'\n", "unknown setting(s) server"),
        ("listen = 9090\n", "listen must be a str"),
        ("cacert = 1\n", "cacert must be a str"),
        ("cert = ['a']\n", "cert must be a str"),
        ("key = false\n", "key must be a str"),
        ("state_dir = {}\n", "state_dir must be a str"),
        ('grace = "10"\n', "grace must be a number of seconds, 0 to 86400"),
        ("grace = true\n", "grace must be a number of seconds, 0 to 86400"),
        ("grace = -1\n", "grace must be a number of seconds, 0 to 86400"),
        ("grace = -0.5\n", "grace must be a number of seconds, 0 to 86400"),
        ('identities = "admin"\n', "[identities] must be a table of name = role"),
        ('[identities]\nalice = "root"\n', "identity 'alice': role 'root' is not one of"),
        ("[identities]\nalice = 1\n", "identity 'alice': role 1 is not one of"),
        ('[identities.alice]\nrole = "user"\n', "identity 'alice': role {'role': 'user'}"),
        ('max_output = "lots"\n', "max_output: invalid size 'lots'"),
        ("max_output = true\n", "max_output: invalid size 'True'"),
        ("listen = \n", "jobd.toml: "),  # not TOML at all
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Config().apply_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # it says which file


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"4096"', 4096),
        ("4096", 4096),
        ('"512K"', 512 << 10),
        ('"1.5G"', 3 << 29),
        ('"2GiB"', 2 << 30),
    ],
)
def test_max_output_in_file(tmp_path: Path, value: str, expected: int) -> None:
    config = Config()
    config.apply_file(write(tmp_path, f"max_output = {value}\n"))
    assert config.max_output == expected


def test_bad_listen_in_file(tmp_path: Path) -> None:
    # Unlike the other settings' errors, this one does not name the file.
    with pytest.raises(ConfigError, match="listen address 'localhost:http': port 'http'"):
        Config().apply_file(write(tmp_path, 'listen = "localhost:http"\n'))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.toml: No such file"):
        Config().apply_file(path)


# --- flags ------------------------------------------------------------------------------


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        listen = "0.0.0.0:1111"
        cacert = "/file/ca.crt"
        cert = "/file/server.pem"
        state_dir = "/file/state"
        grace = 3.5
        [identities]
        alice = "admin"
        """,
    )
    config, args = load(
        [
            "--config", str(path),
            "--listen", "127.0.0.1:2222",
            "--state-dir", "/flag/state",
            "--grace", "0",
            "--key", "/flag/server.key",
            "--max-output", "1M",
        ]
    )  # fmt: skip
    assert config.listen == ("127.0.0.1", 2222)
    assert config.state_dir == Path("/flag/state")
    assert config.grace == 0.0
    assert config.key == Path("/flag/server.key")
    assert config.max_output == 1 << 20
    # What no flag names stays as the file says.
    assert config.cacert == Path("/file/ca.crt")
    assert config.cert == Path("/file/server.pem")
    assert dict(config.roles) == {"alice": Role.ADMIN}
    assert config.config_file == path
    assert args.log_level == "info"


def test_no_file_no_flags_is_the_defaults() -> None:
    config, args = load([])
    assert config == Config()
    assert args.config is None


def test_flags_without_file() -> None:
    config, _ = load(["--listen", ":7", "--cert", "s.pem", "--log-level", "debug"])
    assert config.listen == ("0.0.0.0", 7)
    assert config.cert == Path("s.pem")
    assert config.config_file is None


@pytest.mark.parametrize("grace", ["-1", "nan", "inf", "100000"])
def test_bad_grace_flag(grace: str) -> None:
    with pytest.raises(ConfigError, match="--grace must be a number of seconds, 0 to 86400"):
        load(["--grace", grace])


def test_bad_max_output_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load(["--max-output", "big"])
    assert str(info.value).startswith("--max-output: ")
    assert "invalid size 'big'" in str(info.value)


def test_bad_listen_flag() -> None:
    with pytest.raises(ConfigError, match="missing ']'"):
        load(["--listen", "[::1"])


def test_bad_file_named_by_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load(["--config", str(write(tmp_path, "colour = 'blue'\n"))])


# --- the state directory ----------------------------------------------------------------


def test_state_dir_as_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == Path("/var/lib/jobd")


def test_state_dir_non_root_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "jobd"


@pytest.mark.parametrize("xdg", [None, ""])
def test_state_dir_non_root_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str | None
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", xdg)
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "jobd"


def test_config_default_state_dir_follows_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert Config().state_dir == tmp_path / "jobd"
