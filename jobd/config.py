"""jobd's configuration: defaults, an optional TOML file, then command-line flags.

Every key, with its built-in value or an example, is in ``docs/jobd.example.toml``, which
``tests/unit/test_docs.py`` loads through :func:`load`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

from jobd.jobs.retention import RetentionPolicy
from jobd.model.job import LimitRequest
from jobd.model.units import parse_duration, parse_size
from jobd.policy.accounts import RunAsPolicy
from jobd.policy.accounts import parse_table as parse_run_as
from jobd.policy.auth import DEFAULT_ROLES, Role, parse_roles
from jobd.policy.ceilings import CeilingPolicy, parse_identity, parse_reserve
from jobd.policy.connections import ConnectionLimits
from jobd.policy.connections import parse_table as parse_connections_table
from jobd.policy.isolation import BUILTIN_ROLES, IsolationPolicy, RoleIsolation, parse_role_table
from jobd.policy.limits import BUILTIN_DEFAULTS
from jobd.policy.limits import parse_table as parse_limit_table
from jobd.policy.quotas import QuotaPolicy
from jobd.policy.quotas import parse_table as parse_quota_table

DEFAULT_MAX_OUTPUT = 1 << 30



class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def cgroup_parent_for(state_dir: Path) -> str:
    """Each daemon treats every group under its parent as its own: one parent per state dir."""
    if state_dir == default_state_dir():
        return "jobd"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return f"jobd-{digest}"


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/jobd")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "jobd"


def parse_hostport(value: str, default_port: int = 9090) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` or ``:port``."""
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ConfigError(f"listen address {value!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"listen address {value!r}: expected ':' after ']'")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"listen address {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen address {value!r}: port out of range")
    return host or "0.0.0.0", port


@dataclass
class Config:
    listen: tuple[str, int] = ("localhost", 9090)
    cacert: Path = Path("ca/ca.crt")
    cert: Path = Path("ca/server.pem")
    key: Path | None = None
    crl: Path | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    audit_log: Path | None = None  # None: STATE_DIR/audit.log
    grace: float = 10.0
    max_output: int = DEFAULT_MAX_OUTPUT
    cgroup_parent: str = ""
    cgroups: bool = True
    metrics: tuple[str, int] | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    limit_defaults: LimitRequest = BUILTIN_DEFAULTS
    limit_maxima: dict[Role, LimitRequest] = field(default_factory=dict)
    ceilings: CeilingPolicy = field(default_factory=CeilingPolicy)
    io_devices: tuple[str, ...] = ()
    isolation: IsolationPolicy = field(default_factory=IsolationPolicy)
    roles: Mapping[str, Role] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    quotas: QuotaPolicy = field(default_factory=QuotaPolicy)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    run_as: RunAsPolicy = field(default_factory=RunAsPolicy)
    config_file: Path | None = None

    def apply_file(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        self.config_file = path
        self._apply(data, source=str(path))

    def _apply(self, data: Mapping[str, Any], source: str) -> None:
        unknown = sorted(set(data) - TOP_LEVEL_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        for name, apply in SETTINGS.items():  # in this order: [limits] before [isolation]
            if name in data:
                apply(self, data[name], source)


# --- one function per top-level setting: parse its value, set it on the Config ---------------

Setting: TypeAlias = Callable[[Config, Any, str], None]


def _listen(config: Config, value: Any, source: str) -> None:
    try:
        config.listen = parse_hostport(_typed(value, "listen", str, source))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _path(name: str) -> Setting:
    def apply(config: Config, value: Any, source: str) -> None:
        setattr(config, name, Path(_typed(value, name, str, source)))

    return apply


def _plain(name: str, kind: type) -> Setting:
    def apply(config: Config, value: Any, source: str) -> None:
        setattr(config, name, _typed(value, name, kind, source))

    return apply


def _grace(config: Config, value: Any, source: str) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not _valid_grace(value):
        raise ConfigError(f"{source}: grace must be a number of seconds, 0 to 86400")
    config.grace = float(value)


def _max_output(config: Config, value: Any, source: str) -> None:
    config.max_output = _size(value if isinstance(value, str) else str(value), source,
                              "max_output")  # fmt: skip


def _metrics(config: Config, value: Any, source: str) -> None:
    config.metrics = parse_hostport(_typed(value, "metrics", str, source), 9100)


def _retention_setting(config: Config, value: Any, source: str) -> None:
    config.retention = _retention(_table(value, "retention", source), source)


def _isolation_setting(config: Config, value: Any, source: str) -> None:
    config.isolation = _isolation(value, config.isolation, source)


def _parsed(name: str, parse: Callable[[Any, str], Any]) -> Setting:
    """A table parsed by its own module, whose messages name the source and the table."""

    def apply(config: Config, value: Any, source: str) -> None:
        try:
            setattr(config, name, parse(value, source))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    return apply


def _run_as(config: Config, value: Any, source: str) -> None:
    try:
        config.run_as = parse_run_as(_table(value, "run_as", source), source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _identities(config: Config, value: Any, source: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [identities] must be a table of name = role")
    try:
        config.roles = parse_roles(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _apply_limits_table(config: Config, table: Any, source: str) -> None:
    known = {"default", "max", "reserve", "identity", "io_devices"}
    if not isinstance(table, dict) or set(table) - known:
        raise ConfigError(f"{source}: [limits] holds only io_devices, [limits.default], "
                          "[limits.max.ROLE], [limits.reserve] and [limits.identity]")
    if "io_devices" in table:
        devices = table["io_devices"]
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise ConfigError(f"{source}: [limits] io_devices must be a list of paths")
        config.io_devices = tuple(devices)
    try:
        ceilings: dict[str, Any] = {}
        if "reserve" in table:
            reserve = _table(table["reserve"], "limits.reserve", source)
            ceilings.update(parse_reserve(reserve, f"{source}: [limits.reserve]"))
        if "identity" in table:
            identity = _table(table["identity"], "limits.identity", source)
            ceilings.update(parse_identity(identity, f"{source}: [limits.identity]"))
        config.ceilings = replace(config.ceilings, **ceilings)
        if "default" in table:
            default = _table(table["default"], "limits.default", source)
            parsed = parse_limit_table(default, f"{source}: [limits.default]")
            config.limit_defaults = replace(BUILTIN_DEFAULTS, **_set_fields(parsed))
        for role_name, limits in _table(table.get("max", {}), "limits.max", source).items():
            try:
                role = Role(role_name)
            except ValueError:
                raise ConfigError(f"{source}: [limits.max.{role_name}]: no such role") from None
            where = f"limits.max.{role_name}"
            maximum = _table(limits, where, source)
            config.limit_maxima[role] = parse_limit_table(maximum, f"{source}: [{where}]")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _isolation(table: Any, policy: IsolationPolicy, source: str) -> IsolationPolicy:
    """[isolation.ROLE] tables; a role's keys left out keep their built-in values."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [isolation] must hold [isolation.ROLE] tables")
    roles: dict[Role, RoleIsolation] = dict(policy.roles)
    for role_name, rules in table.items():
        try:
            role = Role(role_name)
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ConfigError(
                f"{source}: [isolation.{role_name}]: no such role (known: {known})"
            ) from None
        where = f"isolation.{role_name}"
        base = roles.get(role) or BUILTIN_ROLES[role]
        try:
            roles[role] = parse_role_table(_table(rules, where, source), f"{source}: [{where}]",
                                           base)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return IsolationPolicy(roles)


def _retention(table: dict[str, Any], source: str) -> RetentionPolicy:
    """max_age = "30d" | false, max_output = "10G" | false (false: no limit), min_free =
    "1G" (what output leaves free on the state directory's disk)."""
    unknown = sorted(set(table) - {"max_age", "max_output", "min_free"})
    if unknown:
        raise ConfigError(f"{source}: [retention]: unknown setting(s) {', '.join(unknown)}")
    policy = RetentionPolicy()
    try:
        if "max_age" in table:
            value = table["max_age"]
            age = None if value is False else parse_duration(str(value))
            policy = replace(policy, max_age=age)
        if "max_output" in table:
            value = table["max_output"]
            size = None if value is False else parse_size(str(value))
            policy = replace(policy, max_output=size)
        if "min_free" in table:
            policy = replace(policy, min_free=parse_size(str(table["min_free"])))
    except ValueError as exc:
        raise ConfigError(f"{source}: [retention]: {exc}") from None
    return policy


def _table(value: Any, name: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return value


def _set_fields(request: LimitRequest) -> dict[str, Any]:
    return {k: v for k, v in vars(request).items() if v not in (None, "")}


def _size(text: str, source: str, name: str = "") -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {name + ': ' if name else ''}{exc}") from None


def _valid_grace(grace: float) -> bool:
    return math.isfinite(grace) and 0 <= grace <= 86400


def _typed(value: Any, name: str, kind: type, source: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}")
    return value


# Every top-level setting of a config file, and how it is applied (docs/jobd.example.toml
# shows each).
SETTINGS: dict[str, Setting] = {
    "listen": _listen,
    **{name: _path(name) for name in ("cacert", "cert", "key", "crl", "state_dir", "audit_log")},
    "grace": _grace,
    "max_output": _max_output,
    "retention": _retention_setting,
    "metrics": _metrics,
    "cgroups": _plain("cgroups", bool),
    "cgroup_parent": _plain("cgroup_parent", str),
    "limits": _apply_limits_table,
    "isolation": _isolation_setting,
    "quotas": _parsed("quotas", parse_quota_table),
    "connections": _parsed("connections", parse_connections_table),
    "run_as": _run_as,
    "identities": _identities,
}
TOP_LEVEL_KEYS = frozenset(SETTINGS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobd",
        description="Run Linux processes for clients authenticated by mutual TLS 1.3.",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file (flags override it)")
    p.add_argument("--listen", metavar="HOST:PORT", help="serve here (localhost:9090)")
    p.add_argument("--cacert", type=Path, help="CA of client certificates (ca/ca.crt)")
    p.add_argument("--cert", type=Path, help="server certificate, may hold the key (ca/server.pem)")
    p.add_argument("--key", type=Path, help="server private key, if not in --cert")
    p.add_argument("--crl", type=Path, help="certificate revocation list (ca/gen.sh --revoke "
                   "writes ca/ca.crl); reloaded on SIGHUP")
    p.add_argument("--state-dir", type=Path, help="where job output lives (/var/lib/jobd as root)")
    p.add_argument("--audit-log", type=Path, metavar="PATH",
                   help="append-only audit log of every call (STATE_DIR/audit.log)")
    p.add_argument("--grace", type=float, help="seconds between SIGTERM and SIGKILL on stop (10)")
    p.add_argument("--max-output", metavar="SIZE", help="output kept per job, e.g. 512M (1G)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics over plain HTTP here (off by default)")
    p.add_argument("--no-cgroups", action="store_true", help="run jobs without cgroups "
                   "(no limits; stop kills the process group only)")
    p.add_argument("--check", "--check-config", action="store_true",
                   help="print the configuration and what this machine supports "
                   "(cgroups, namespaces), then exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="auto", choices=["auto", "json", "text"],
                   help="json: one object per line; auto: json unless stderr is a terminal")
    return p


def load(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    config = Config()
    if args.config is not None:
        config.apply_file(args.config)
    if args.listen is not None:
        config.listen = parse_hostport(args.listen)
    for name in ("cacert", "cert", "key", "crl", "state_dir", "audit_log"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.metrics is not None:
        config.metrics = parse_hostport(args.metrics, 9100)
    if args.no_cgroups:
        config.cgroups = False
    if args.max_output is not None:
        config.max_output = _size(args.max_output, "--max-output")
    if args.grace is not None:
        if not _valid_grace(args.grace):
            raise ConfigError("--grace must be a number of seconds, 0 to 86400")
        config.grace = args.grace
    return config, args
