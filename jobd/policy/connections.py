"""Connection limits: how many connections a client may hold, for how long, and how many calls
and stream resets each may carry (the config file's ``[connections]`` table). Values and their
parsing; ``jobd.api.connections`` enforces them."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from jobd.model.units import parse_duration

MAX_COUNT = 1_000_000
MAX_HANDSHAKE_TIMEOUT = 3600.0
MAX_IDLE_TIMEOUT = 30 * 86400.0


@dataclass(frozen=True)
class ConnectionLimits:
    handshake_timeout: float = 5.0  # also bounds the TLS close
    idle_timeout: float = 300.0
    max: int = 1000
    max_per_peer: int = 100
    max_streams: int = 100
    # A call's request message must have arrived this long after the call began.
    request_timeout: float = 10.0
    # Stream resets a connection may make in any ten seconds (a tenth of it per second, with
    # all of it at once as a burst) before it is closed.
    max_resets: int = 200

    def describe(self) -> str:
        """One line for ``jobd --check``."""
        return (
            f"connections: at most {self.max} ({self.max_per_peer} per client address), "
            f"{self.max_streams} concurrent calls each; TLS handshake within "
            f"{self.handshake_timeout:g} s; closed after {self.idle_timeout:g} s without a call; "
            f"a call's request within {self.request_timeout:g} s; closed past "
            f"{self.max_resets} stream resets in 10 s"
        )


_DURATIONS = {"handshake_timeout": (MAX_HANDSHAKE_TIMEOUT, "1h"),
              "idle_timeout": (MAX_IDLE_TIMEOUT, "30d"),
              "request_timeout": (MAX_HANDSHAKE_TIMEOUT, "1h")}
_COUNTS = ("max", "max_per_peer", "max_streams", "max_resets")


def parse_table(table: Any, where: str) -> ConnectionLimits:
    """The config file's ``[connections]`` table; keys left out keep the built-in values.
    ``where`` names the file in messages; errors are ValueError."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [connections] must be a table")
    known = [f.name for f in fields(ConnectionLimits)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{where}: [connections]: unknown setting(s) {', '.join(unknown)} "
                         f"(known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name in _DURATIONS:
            values[name] = _duration(value, name, *_DURATIONS[name], where)
        elif not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
            raise ValueError(f"{where}: [connections]: {name} must be a whole number from 1 to "
                             f"{MAX_COUNT}, not {value!r}")
        else:
            values[name] = value
    return ConnectionLimits(**values)


def _duration(value: Any, name: str, most: float, most_text: str, where: str) -> float:
    problem = (f"{where}: [connections]: {name} must be a number of seconds or a duration such "
               f"as \"90s\" or \"5m\", more than 0 and at most {most_text}, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(problem)
    try:
        seconds = parse_duration(str(value))
    except ValueError:
        raise ValueError(problem) from None
    if not (math.isfinite(seconds) and 0 < seconds <= most):
        raise ValueError(problem)
    return seconds
