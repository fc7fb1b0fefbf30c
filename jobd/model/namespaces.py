"""The Linux namespaces a job may run in: a value of the model, named in requests, records and
messages; which a job gets is policy (``jobd.policy.isolation``)."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Namespace(enum.Enum):
    PID = "pid"
    MOUNT = "mount"
    NETWORK = "network"
    UTS = "uts"
    IPC = "ipc"


ORDER = tuple(Namespace)
ALL: frozenset[Namespace] = frozenset(Namespace)
NONE: frozenset[Namespace] = frozenset()


def names(namespaces: Iterable[Namespace]) -> str:
    """``pid, mount, network``: in the canonical order; ``none`` for none."""
    chosen = set(namespaces)
    return ", ".join(ns.value for ns in ORDER if ns in chosen) or "none"
