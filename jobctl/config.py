"""jobctl's config file: named servers ("contexts", as kubectl has them).

    # $XDG_CONFIG_HOME/jobctl/config.toml (~/.config/jobctl/config.toml)
    current = "dev"                 # the context used when none is named

    [contexts.dev]
    server = "localhost:9090"
    cacert = "ca/ca.crt"            # relative paths: from the config file's folder
    cert = "ca/client_0.pem"

    [contexts.build-02]
    server = "build-02.example.com:9090"
    cacert = "~/.jobd/build-ca.crt"
    cert = "~/.jobd/me.crt"
    key = "~/.jobd/me.key"          # only when the key is not in the cert file

The file is chosen by ``--config FILE``, else ``$JOBCTL_CONFIG``, else the default path (which
may be missing); the context by ``--context NAME``, else ``$JOBCTL_CONTEXT``, else ``current``.
A context's values sit between the environment and the built-in defaults: flags beat
``JOBCTL_*`` variables, which beat the context, which beats the defaults.

Standard library only, and loaded only once a command runs (never for ``--help``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The connection options a context may set, and the variable that overrides each.
FIELDS = {
    "server": "JOBCTL_SERVER",
    "cacert": "JOBCTL_CACERT",
    "cert": "JOBCTL_CERT",
    "key": "JOBCTL_KEY",
}
PATH_FIELDS = ("cacert", "cert", "key")


class ConfigError(Exception):
    """The config file cannot be read or makes no sense, or the context named is not in it."""


# Plain classes, not NamedTuples or dataclasses: making those costs up to ~1 ms of every start
# (issue 7's target: `jobctl status` within 1.2x the CLI floor).
class Context:
    __slots__ = ("name", "values")

    def __init__(self, name: str, values: Mapping[str, str]) -> None:
        self.name = name
        self.values = values  # some of FIELDS' keys; paths already made absolute


class Config:
    __slots__ = ("contexts", "current", "exists", "path")

    def __init__(
        self, path: Path, exists: bool, contexts: Mapping[str, Context], current: str | None
    ) -> None:
        self.path = path
        self.exists = exists
        self.contexts = contexts
        self.current = current  # the file's `current`


def default_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return Path(base) / "jobctl" / "config.toml"


def config_path(flag: str | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read, and whether it was named (then it must exist)."""
    named = flag or environ.get("JOBCTL_CONFIG")
    if named:
        return Path(named).expanduser(), True
    return default_path(environ), False


def load(path: Path, *, required: bool) -> Config:
    """Read the config file at ``path``; a missing one is empty unless ``required``."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path}: not found") from None
        return Config(path, False, {}, None)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    import tomllib  # only when there is a file: most runs have none

    try:
        with file:
            data = tomllib.load(file)
    except OSError as exc:  # opened, but reading it failed
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    return parse(data, path)


def parse(data: Mapping[str, Any], path: Path) -> Config:
    """The Config in ``data`` (a parsed TOML document read from ``path``)."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"config file {path}: {why}")

    unknown = sorted(set(data) - {"current", "contexts"})
    if unknown:
        raise bad(f"unknown setting(s) {', '.join(unknown)} (expected current, [contexts.NAME])")
    current = data.get("current")
    if current is not None and not (isinstance(current, str) and current):
        raise bad("current must be the name of a context")
    tables = data.get("contexts", {})
    if not isinstance(tables, dict):
        raise bad("contexts must be tables: [contexts.NAME]")
    contexts = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise bad(f"contexts.{name} must be a table: [contexts.{name}]")
        wrong = sorted(set(table) - set(FIELDS))
        if wrong:
            raise bad(
                f"contexts.{name}: unknown setting(s) {', '.join(wrong)} "
                f"(expected {', '.join(FIELDS)})"
            )
        values = {}
        for key, value in table.items():
            if not isinstance(value, str) or not value:
                raise bad(f"contexts.{name}.{key} must be a non-empty string")
            if key in PATH_FIELDS:
                value = str(path.parent / Path(value).expanduser())
            values[key] = value
        contexts[name] = Context(name, values)
    if current is not None and current not in contexts:
        raise bad(f"current = {current!r} names no context ({_known(contexts)})")
    return Config(path, True, contexts, current)


def _known(contexts: Mapping[str, Context]) -> str:
    return f"known: {', '.join(sorted(contexts))}" if contexts else "it defines none"


def chosen(config: Config, flag: str | None, environ: Mapping[str, str]) -> Context | None:
    """The context in use: ``--context``, else ``$JOBCTL_CONTEXT``, else the file's current."""
    name = flag or environ.get("JOBCTL_CONTEXT") or config.current
    if not name:
        return None
    if name not in config.contexts:
        where = f"in {config.path}" if config.exists else f"(no config file at {config.path})"
        raise ConfigError(f"unknown context {name!r} {where}; {_known(config.contexts)}")
    return config.contexts[name]


def apply(
    options: dict[str, str | None],
    explicit: set[str] | frozenset[str],
    context: Context | None,
    environ: Mapping[str, str],
) -> dict[str, str | None]:
    """``options`` (the connection options as parsed, with environment and built-in
    defaults) with the context's values where neither a flag (``explicit``) nor an
    environment variable set them."""
    if context is None:
        return dict(options)
    result = dict(options)
    for field, variable in FIELDS.items():
        if field in explicit or environ.get(variable) or field not in context.values:
            continue
        result[field] = context.values[field]
    return result
