"""The policy in force: one immutable value, built from the configuration at start and again,
whole, on SIGHUP.

Everything a call is decided by that a reload may change is in :class:`Policy`: who each
certificate name is (roles), which certificates are revoked, what a job may ask for and gets
(limits), how much each identity may have at once (quotas), and which account its jobs run
as. The manager and the service read ``CurrentPolicy.now`` once per decision; a reload
builds the next value completely (or fails, and changes nothing) and puts it in place with
one assignment, so no call ever sees half of one configuration and half of another.
Isolation and the ceilings' cgroup files are not in it: the first needs a restart, the
second is written to the kernel (``jobd.server.apply_ceilings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from jobd.policy.accounts import RunAsPolicy
from jobd.policy.auth import DEFAULT_ROLES, Role
from jobd.policy.limits import LimitPolicy
from jobd.policy.quotas import QuotaPolicy


@dataclass(frozen=True)
class Policy:
    roles: Mapping[str, Role] = field(default_factory=lambda: MappingProxyType(DEFAULT_ROLES))
    revoked: frozenset[int] = frozenset()  # certificate serial numbers the CRL revokes
    limits: LimitPolicy = field(default_factory=LimitPolicy)
    quotas: QuotaPolicy = field(default_factory=QuotaPolicy)
    run_as: RunAsPolicy = field(default_factory=RunAsPolicy)

    def __post_init__(self) -> None:
        # Read-only even through the mapping a caller handed in.
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))


class CurrentPolicy:
    """Where the policy in force is kept, shared by the manager and the service."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.now = policy or Policy()

    def swap(self, policy: Policy) -> None:
        self.now = policy
