"""Choose the backend this machine supports, from /proc/self/{mountinfo,cgroup} alone."""

from __future__ import annotations

from pathlib import Path

from jobd.cgroups.base import CgroupBackend, check_group_name
from jobd.cgroups.files import describe_error, read_text
from jobd.cgroups.mounts import find_hierarchies
from jobd.cgroups.none import NoneBackend
from jobd.cgroups.v1 import V1Backend
from jobd.cgroups.v2 import V2Backend

PROC_SELF = Path("/proc/self")


def detect(
    parent_name: str = "jobd", *, proc_self: Path = PROC_SELF, leave_own_group: bool = False,
) -> CgroupBackend:
    """The backend for this machine, with its parent groups created.

    v1 wins when any v1 controller jobd uses is mounted (a hybrid machine's cgroup2 then
    only serves cgroup.kill and cgroup.events); otherwise cgroup2 if mounted; otherwise, or
    when no group can be created (not root, read-only mount), the "none" backend, whose
    describe() says why. Two daemons on one machine need different ``parent_name``s: each
    treats every group under its parent as its own. With ``leave_own_group`` (the daemon) a
    process alone in its non-root v2 group moves into a leaf of it, as a service under
    systemd's Delegate=yes must, so that the group can hand controllers down to the jobs.
    """
    check_group_name(parent_name)
    try:
        mountinfo = read_text(proc_self / "mountinfo")
        membership = read_text(proc_self / "cgroup")
    except OSError as exc:
        return NoneBackend(f"cannot read {exc.filename}: {describe_error(exc)}")
    hierarchies, notes = find_hierarchies(mountinfo, membership)
    v1 = [h for h in hierarchies if h.version == 1]
    v2 = next((h for h in hierarchies if h.version == 2), None)
    backend: V1Backend | V2Backend
    if v1:
        backend = V1Backend(parent_name, v1, v2, notes)
    elif v2 is not None:
        backend = V2Backend(parent_name, v2, notes, leave_own_group=leave_own_group)
    else:
        return NoneBackend("no cgroup hierarchy is mounted", details="\n".join(notes))
    reason = backend.unusable_reason
    if reason is not None:
        return NoneBackend(reason, details=backend.describe())
    return backend
