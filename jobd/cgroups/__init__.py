"""Per-job cgroups: limits, usage, whole-tree kill, emptiness and OOM events.

``detect()`` picks the backend (v2, v1 with or without the unified hierarchy, or none); the
unit tests' stand-in is ``tests/fake_cgroups.py``.
"""

from jobd.cgroups.base import CONTROLLERS, CgroupBackend, JobCgroup
from jobd.cgroups.blockdev import block_device
from jobd.cgroups.detect import detect
from jobd.cgroups.none import NoneBackend
from jobd.model.resources import Limits, Usage
from jobd.model.units import format_size, parse_cpu, parse_size

__all__ = [
    "CONTROLLERS",
    "CgroupBackend",
    "JobCgroup",
    "Limits",
    "NoneBackend",
    "Usage",
    "block_device",
    "detect",
    "format_size",
    "parse_cpu",
    "parse_size",
]
