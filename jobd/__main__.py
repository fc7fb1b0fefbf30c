"""``jobd``: parse the configuration, set up logging, serve until a signal."""

from __future__ import annotations

import os
import sys

import trio

from jobd import logs
from jobd.api.grpclib_private import GrpclibChanged
from jobd.api.tls import TLSConfigError
from jobd.config import Config, ConfigError, load
from jobd.jobs.statedir import StateDir, StateDirError
from jobd.launch import binary
from jobd.policy.accounts import daemon_account, shared_without_pid_namespace
from jobd.policy.auth import Role
from jobd.policy.ceilings import Host
from jobd.policy.limits import NAMES, describe
from jobd.server import detect_cgroups, detect_isolation, maxima, serve


def check_report(config: Config) -> str:
    """What ``jobd --check`` prints: the effective configuration and what this host offers."""
    isolation = detect_isolation(config)
    backend = detect_cgroups(config)
    host = Host.read()
    try:
        lines = [
            f"config file: {config.config_file or '(none)'}",
            f"listen: {config.listen[0]}:{config.listen[1]}",
            f"cacert: {config.cacert}",
            f"cert: {config.cert}" + (f", key: {config.key}" if config.key else ""),
            f"state dir: {config.state_dir}",
            f"grace: {config.grace:g} s; output cap per job: {config.max_output} bytes",
            f"retention: max_age {config.retention.max_age} s, "
            f"max_output {config.retention.max_output} bytes",
            f"default limits: {_limits_text(config.limit_defaults)}",
            *(f"maximum limits for {role.value}: {_limits_text(req)}"
              for role, req in maxima(config, host).items()),
            *config.ceilings.describe(host),
            "identities: " + ", ".join(f"{k}={v.value}" for k, v in config.roles.items()),
            config.connections.describe(),
            backend.describe(),
            binary.describe(),
            *config.isolation.describe(),
            *filter_report(config),
            isolation.availability.describe(),
            "private directories (an empty tmpfs each, per job with a mount namespace): "
            + (", ".join(isolation.private_dirs) or "none"),
            *run_as_report(config),
            *(f"run as: WARNING: {w}" for w in shared_without_pid_namespace(
                config.run_as, config.isolation, isolation.availability.available)),
        ]
    finally:
        # The parent groups are a running daemon's if one uses this state directory.
        if not StateDir(config.state_dir).in_use():
            backend.remove_parent()
    return "\n".join(lines)


def filter_report(config: Config) -> list[str]:
    """The syscall filter each role's jobs run under, call by call."""
    lines = []
    for role in Role:
        spec = config.isolation.rule(role).syscalls
        lines.append(f"syscall filter for {role.value}: {spec.describe()}")
        if spec.enabled:
            lines += [f"  {line}" for line in spec.details()]
    return lines


def run_as_report(config: Config) -> list[str]:
    if os.geteuid() != 0:
        return [f"run as: every job runs as the daemon's own user, "
                f"{daemon_account().describe()} (switching accounts needs root)"]
    return config.run_as.describe()


def _limits_text(request: object) -> str:
    values = {k: v for k, v in vars(request).items() if v not in (None, "")}
    return ", ".join(f"{k}={describe(k, v) if k in NAMES else v}"
                     for k, v in values.items()) or "none"


def main(argv: list[str] | None = None) -> None:
    try:
        config, args = load(argv)
    except ConfigError as exc:
        sys.exit(f"jobd: {exc}")
    logs.setup(args.log_level, args.log_format)
    if args.check:
        print(check_report(config))
        return
    try:
        trio.run(serve, config)
    except BaseException as exc:
        # Failures of start-up (files, port, state dir) arrive wrapped in the nurseries'
        # exception groups: say them in one line. Anything else is a bug: let it show.
        reason = _startup_failure(exc)
        if reason is None:
            raise
        sys.exit(f"jobd: {reason}")


def _startup_failure(exc: BaseException) -> str | None:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TLSConfigError):
        return f"TLS setup failed: {exc}"
    if isinstance(exc, GrpclibChanged):
        return str(exc)
    if isinstance(exc, StateDirError | ConfigError | OSError):
        return str(exc)
    return None


if __name__ == "__main__":
    main()
