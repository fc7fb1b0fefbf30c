"""Per-identity quotas: concurrent running jobs, job starts per minute, open output streams,
and output kept on disk.

``[quotas.default]`` applies to every identity; ``[quotas.identity.NAME]`` overrides some of
its keys for one identity. The counts themselves live where the things counted are: running
jobs in the manager, streams in the service; the start rate in a ``StartRate`` here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from jobd.model.units import parse_size

KEYS = ("running", "starts_per_minute", "streams", "output")
MAXIMUM = 1_000_000
WINDOW = 60.0


@dataclass(frozen=True)
class Quota:
    running: int = 1000
    starts_per_minute: int = 600
    streams: int = 1000
    output: int = 5 << 30  # bytes of output its jobs may keep on disk, in all (jobd.jobs.diskuse)


@dataclass(frozen=True)
class QuotaPolicy:
    default: Quota = Quota()
    identities: Mapping[str, Quota] = field(default_factory=dict)

    def of(self, identity: str) -> Quota:
        return self.identities.get(identity, self.default)


def refusal(value: int, what: str, identity: str) -> str:
    """The message of a RESOURCE_EXHAUSTED: which quota, its value, whose."""
    return f"quota reached: {value} {what} for {identity}"


def _parse_quota(table: Any, base: Quota, where: str) -> Quota:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown quota(s) {', '.join(unknown)} "
                         f"(known: {', '.join(KEYS)})")
    values = dict(table)
    for name, value in table.items():
        if name == "output":
            try:
                values[name] = parse_size(str(value))
            except ValueError as exc:
                raise ValueError(f"{where}: output: {exc}") from None
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAXIMUM:
            raise ValueError(f"{where}: {name} must be a whole number from 0 to {MAXIMUM}, "
                             f"not {value!r}")
    return replace(base, **values)


def parse_table(table: Any, where: str) -> QuotaPolicy:
    """The config file's [quotas] table: [quotas.default] and [quotas.identity.NAME]."""
    if not isinstance(table, dict) or set(table) - {"default", "identity"}:
        raise ValueError(f"{where}: [quotas] holds only [quotas.default] and "
                         "[quotas.identity.NAME]")
    default = _parse_quota(table.get("default", {}), Quota(), f"{where}: [quotas.default]")
    identities = table.get("identity", {})
    if not isinstance(identities, dict):
        raise ValueError(f"{where}: [quotas.identity] must hold [quotas.identity.NAME] tables")
    return QuotaPolicy(default, {
        name: _parse_quota(quota, default, f"{where}: [quotas.identity.{name}]")
        for name, quota in identities.items()
    })


class StartRate:
    """At most ``limit`` starts per identity in any ``window`` seconds (a sliding log).

    ``clock`` is trio's by default; tests give a fake one. The limit is passed on each call,
    so a reloaded quota applies at once to the starts already counted.
    """

    def __init__(self, clock: Callable[[], float] = trio.current_time,
                 window: float = WINDOW) -> None:
        self._clock = clock
        self._window = window
        self._starts: dict[str, deque[float]] = {}

    def allow(self, identity: str, limit: int) -> bool:
        """Count a start and say yes, or say no (and count nothing)."""
        now = self._clock()
        starts = self._starts.setdefault(identity, deque())
        while starts and starts[0] <= now - self._window:
            starts.popleft()
        if len(starts) >= limit:
            if not starts:
                del self._starts[identity]
            return False
        starts.append(now)
        return True

    def counted(self, identity: str) -> int:
        """Starts of ``identity`` still inside the window (for tests and metrics)."""
        now = self._clock()
        return sum(1 for t in self._starts.get(identity, ()) if t > now - self._window)

