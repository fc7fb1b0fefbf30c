"""Parsing and printing of limit values, shared by the CLI, the config and the daemon."""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``"512K"``, ``"256M"``, ``"1.5G"``, ``"1GiB"`` or ``"1048576"``.

    Suffixes are binary (K = 1024), as in ``docker --memory`` and the kernel's own files.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid size {text!r}: expected a number of bytes with an optional "
            "K, M, G or T suffix, e.g. 256M"
        )
    number, scale = match["number"], _SCALE[match["unit"].lower()]
    if "." not in number:  # exact for any size; floats round past 2**53
        return int(number) * scale
    value = float(number) * scale
    if not value.is_integer():
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


def parse_cpu(text: str) -> float:
    """Cores from ``"0.5"``, ``"50%"`` or ``"500m"`` (millicores); must be above zero."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100
        elif raw.endswith("m"):
            value = float(raw[:-1]) / 1000
        else:
            value = float(raw)
    except ValueError:
        raise ValueError(
            f"invalid CPU limit {text!r}: expected a fraction of cores such as 0.5, 50% or 500m"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"invalid CPU limit {text!r}: must be more than zero")
    return value


def format_size(size: int) -> str:
    """``104857600`` → ``"100 MiB"``; exact multiples print without decimals."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{size} B"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "15m", "12h", "30d" or "2w"."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 3600, 90m, 12h, 30d")
    return float(match[1]) * _SECONDS[match[2].lower()]
