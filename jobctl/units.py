"""Resource limit values as people write them: CPU cores, sizes in bytes, task counts.

The grammar is jobd's own (its config file takes the same values), re-done here with the
standard library alone: jobctl does not import the daemon, and these run while arguments are
parsed, before anything heavy is loaded. Every parser raises ValueError with a one-line
message naming the value and what was expected.
"""

from __future__ import annotations

import math
import re

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

# re compiles these on first use and keeps them; most commands never parse a size.
_SIZE = r"(?i)(\d+)(?:\.(\d+))?\s*([kmgt]?)(?:i?b)?"
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DEVICE = r"\d+:\d+"


def parse_cpu(text: str) -> float:
    """Cores from ``0.5``, ``50%`` or ``500m`` (millicores); more than zero."""
    raw = text.strip()
    number, scale = raw, 1.0
    if raw.endswith("%"):
        number, scale = raw[:-1], 100.0
    elif raw.endswith("m"):
        number, scale = raw[:-1], 1000.0
    try:
        value = float(number) / scale
    except ValueError:
        raise ValueError(
            f"invalid CPU limit {text!r}: expected cores such as 0.5, 50% or 500m"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"invalid CPU limit {text!r}: must be more than 0")
    return value


def parse_size(text: str) -> int:
    """Bytes from ``256M``, ``1G``, ``1.5G``, ``512KiB`` or ``1048576``: binary units
    (1K = 1024), more than zero, at most what a uint64 holds."""
    match = re.fullmatch(_SIZE, text.strip())
    if match is None:
        raise ValueError(
            f"invalid size {text!r}: expected bytes with an optional K, M, G or T suffix "
            "(1K = 1024), e.g. 256M"
        )
    whole, fraction, unit = match[1], match[2] or "", match[3].lower()
    decimals: int = 10 ** len(fraction)
    value, rest = divmod(int(whole + fraction) * _SCALE[unit], decimals)
    if rest:
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    if value == 0:
        raise ValueError(f"invalid size {text!r}: must be more than 0")
    if value > UINT64_MAX:
        raise ValueError(f"invalid size {text!r}: too large")
    return value


def parse_rate(text: str) -> int:
    """Bytes per second: a size, optionally written with ``/s`` (``10M``, ``10MiB/s``)."""
    return parse_size(text.strip().removesuffix("/s"))


def parse_count(text: str) -> int:
    """A whole number from 1 to 2**32 - 1 (a task limit)."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"invalid number {text!r}: expected a whole number") from None
    if not 0 < value <= UINT32_MAX:
        raise ValueError(f"invalid number {text!r}: expected 1 to {UINT32_MAX}")
    return value


def parse_device(text: str) -> str:
    """``MAJOR:MINOR``, or an absolute path on the daemon's host (its disk is meant)."""
    device = text.strip()
    if not (re.fullmatch(_DEVICE, device) or device.startswith("/")):
        raise ValueError(
            f"invalid device {text!r}: expected MAJOR:MINOR (e.g. 8:0) or an absolute path "
            "on the server"
        )
    return device


def format_size(n: int) -> str:
    """``268435456`` → ``256 MiB``, ``12.3 MiB``: the largest binary unit, a decimal only
    when the value is not a whole number of it (jobd words limits the same way)."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if n % scale == 0 else f"{value:.1f} {unit}"
    return f"{n} B"
