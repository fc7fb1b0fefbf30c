"""Which limits a job gets: what it asked for, the daemon's defaults, its role's maxima.

For each resource: an explicit request must not exceed the role's maximum (INVALID_ARGUMENT
naming the limit); without one, the default applies, capped by the maximum — and a role with
a maximum but no default gets the maximum, so leaving a limit out never escapes it. Defaults
that this machine cannot enforce are dropped; an explicit request for one is refused later by
the cgroup backend (FAILED_PRECONDITION naming the controller).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jobd.cgroups.blockdev import block_device, whole_disk
from jobd.model.errors import InvalidArgument
from jobd.model.job import LimitRequest
from jobd.model.resources import LIMIT_CONTROLLER, Limits
from jobd.model.units import format_size, parse_cpu, parse_size
from jobd.policy.auth import Role

NAMES = ("cpu", "memory", "io_read_bps", "io_write_bps", "pids")
BUILTIN_DEFAULTS = LimitRequest(pids=4096)  # a fork bomb stops here unless configured
# The kernel's CFS quota has a 1 ms floor per 100 ms period: less than 0.01 CPU cannot be kept.
MINIMUM = {"cpu": 0.01}
# What the API and the kernel files can carry.
MAXIMUM = {"cpu": 4096.0, "memory": 2**62, "io_read_bps": 2**62, "io_write_bps": 2**62,
           "pids": 2**31 - 1}
_DEVICE = re.compile(r"(\d+):(\d+)")


def describe(name: str, value: float) -> str:
    if name == "cpu":
        return f"{value:g} CPU"
    if name == "pids":
        return f"{int(value)} tasks"
    suffix = "/s" if name.startswith("io_") else ""
    return format_size(int(value)) + suffix


def parse_device(text: str, named: tuple[str, ...] | None = None) -> tuple[int, int]:
    """"MAJOR:MINOR", or a path whose disk is meant. ``named``: the only paths allowed (the
    ones the configuration names, which the daemon may look at); None allows any (for the
    configuration's own). A client's other path is refused with one answer whether it exists
    or not, and never looked at: the daemon does not stat a client's path as root."""
    match = _DEVICE.fullmatch(text.strip())
    if not match and named is not None and text not in named:
        allowed = ", ".join(repr(n) for n in named)
        raise InvalidArgument(
            f"io_device {text!r}: not a device this server names: give MAJOR:MINOR"
            + (f", or one of {allowed}" if allowed else "")
        )
    try:
        if match:
            return whole_disk(int(match[1]), int(match[2]))
        return block_device(text)
    except FileNotFoundError:
        raise InvalidArgument(f"io_device {text!r}: no such file or device") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"io_device {text!r}: {exc}") from None


@dataclass(frozen=True)
class LimitPolicy:
    defaults: LimitRequest = BUILTIN_DEFAULTS
    maxima: Mapping[Role, LimitRequest] = field(default_factory=dict)
    default_io_device: str = ""
    # Paths a request's io_device may name (``[limits] io_devices``), besides MAJOR:MINOR
    # and the default devices.
    io_devices: tuple[str, ...] = ()

    def validate(self) -> None:
        """Refuse at start-up what would make every job start fail later."""
        if self.defaults.io_read_bps or self.defaults.io_write_bps:
            try:
                parse_device(self.defaults.io_device or self.default_io_device)
            except InvalidArgument as exc:
                raise ValueError(f"[limits.default]: {exc}") from None
        for device in self.io_devices:
            try:
                parse_device(device)
            except InvalidArgument as exc:
                raise ValueError(f"[limits] io_devices: {exc}") from None

    def effective(
        self, request: LimitRequest, role: Role, available: frozenset[str]
    ) -> Limits:
        maximum = self.maxima.get(role, LimitRequest())
        values: dict[str, Any] = {}
        for name in NAMES:
            asked, cap = getattr(request, name), getattr(maximum, name)
            if asked is not None:
                if not asked >= MINIMUM.get(name, 0) or not asked > 0:
                    least = f"at least {MINIMUM[name]:g}" if name in MINIMUM else "more than 0"
                    raise InvalidArgument(f"{name} limit must be {least}")
                if asked > MAXIMUM[name]:
                    raise InvalidArgument(f"{name} limit must be at most {MAXIMUM[name]:g}")
                if cap is not None and asked > cap:
                    raise InvalidArgument(
                        f"{name} limit {describe(name, asked)} is above the maximum for the "
                        f"{role.value} role ({describe(name, cap)})"
                    )
                values[name] = asked
                continue
            value = getattr(self.defaults, name)
            if cap is not None:
                value = cap if value is None else min(value, cap)
            if value is not None and LIMIT_CONTROLLER[name] in available:
                values[name] = value
        if "io_read_bps" in values or "io_write_bps" in values:
            defaults = tuple(d for d in (self.defaults.io_device, self.default_io_device) if d)
            device = request.io_device or (defaults[0] if defaults else "")
            if not device:
                raise InvalidArgument("an io limit needs io_device (MAJOR:MINOR or a path)")
            values["io_device"] = parse_device(device, (*self.io_devices, *defaults))
        try:
            return Limits(**values)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None


def parse_table(table: Mapping[str, Any], where: str) -> LimitRequest:
    """A config file's limits table: cpu = 0.5 | "50%", memory = "1G", pids = 64, ..."""
    unknown = sorted(set(table) - {*NAMES, "io_device"})
    if unknown:
        raise ValueError(f"{where}: unknown limit(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        try:
            if name == "io_device":
                values[name] = str(raw)
            elif name == "cpu":
                values[name] = parse_cpu(str(raw))
            elif name == "pids":
                if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
                    raise ValueError(f"pids must be a positive whole number, not {raw!r}")
                values[name] = raw
            else:
                values[name] = parse_size(str(raw))
                if values[name] <= 0:
                    raise ValueError(f"must be more than 0, not {raw!r}")
            if name in MAXIMUM and values[name] > MAXIMUM[name]:
                raise ValueError(f"must be at most {MAXIMUM[name]:g}, not {raw!r}")
        except ValueError as exc:
            raise ValueError(f"{where}: {name}: {exc}") from None
    return replace(LimitRequest(), **values)
