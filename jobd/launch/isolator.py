"""The isolation a job gets, put to work: the policy and what this host can do, the
directories each job with a mount namespace gets private, and the compiled syscall filters.
The decisions are ``jobd.policy.isolation``'s; this holds what they need at run time."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobd.launch import seccomp
from jobd.model.namespaces import Namespace
from jobd.policy.auth import Role
from jobd.policy.isolation import Availability, IsolationPolicy, RoleIsolation
from jobd.policy.syscalls import FilterSpec


@dataclass
class Isolator:
    """What the manager and the supervisor use: the policy, what this host can do, the
    directories each job with a mount namespace gets private, and the compiled syscall
    filters (a sealed memfd each, by filter and by whether the job has a PID namespace)."""

    policy: IsolationPolicy = field(default_factory=IsolationPolicy)
    availability: Availability = field(default_factory=Availability)
    private_dirs: tuple[str, ...] = ()
    filters: dict[tuple[FilterSpec, bool], int] = field(default_factory=dict)

    def effective(self, request: frozenset[Namespace] | None, role: Role) -> frozenset[Namespace]:
        return self.policy.effective(request, role, self.availability)

    def rule(self, role: Role) -> RoleIsolation:
        return self.policy.rule(role)

    def filter_fd(self, spec: FilterSpec, pid_namespace: bool) -> int | None:
        """The descriptor of the compiled filter for ``spec`` (None: no filter)."""
        if not spec.enabled:
            return None
        key = (spec, pid_namespace)
        if key not in self.filters:  # built at start for each role's filter (see prepare)
            self.filters[key] = seccomp.sealed(seccomp.build(spec, pid_namespace))
        return self.filters[key]

    def prepare(self) -> None:
        """Build every role's filters now: an unknown name stops the daemon at start
        (SeccompError), not a job later."""
        if self.availability.seccomp_reason:
            return
        for role in Role:
            spec = self.rule(role).syscalls
            if spec.enabled:
                seccomp.check(spec)
                for pid_namespace in (True, False):
                    self.filter_fd(spec, pid_namespace)
