"""Isolation: which Linux namespaces a job runs in, who may ask for what, and what this host can do.

A job may get its own PID, mount, network, UTS and IPC namespaces. What it gets is its request,
or without one its role's default; a role may be forbidden to ask for less than its default
(``allow_opt_out``) or to use the host's network at all (``allow_network``). A role may also
see the whole file system read-only (``read_only``, with a minimal /dev of its own), but for the
paths the configuration names (``writable``). What a role requires and this host cannot give
is refused (FAILED_PRECONDITION naming it), never silently dropped; a default the role may do
without is dropped with one warning at start. Pure, and tested synchronously.

The namespaces and mounts are made by the compiled launcher (``jobd.launch``) in the job's
own first process; ``jobd.launch.probe.detect`` runs it once at start with everything to find
out what works, and ``jobd.launch.isolator`` holds what the jobs need of it at run time.
With a PID namespace the command runs under the launcher's small init (PID 1), which forwards a
stop's SIGTERM to it and reaps orphans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jobd.model.errors import FailedPrecondition, PermissionDenied
from jobd.model.namespaces import ALL, NONE, ORDER, Namespace, names
from jobd.policy.auth import Role
from jobd.policy.syscalls import FilterSpec

ALIASES = {"net": Namespace.NETWORK}
# The OOM killer's preference for a job's processes (-1000 never .. 1000 first); the daemon
# itself runs at DAEMON_OOM_SCORE_ADJ, so a job is always chosen before it.
USER_OOM_SCORE_ADJ = 500
DAEMON_OOM_SCORE_ADJ = -900


def parse_names(value: object, where: str) -> frozenset[Namespace]:
    """A list of namespace names, or "all" / "none" (``net`` is ``network``)."""
    if value in ("all", "none"):
        return ALL if value == "all" else NONE
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of namespaces, \"all\" or \"none\"")
    found = set()
    for name in value:
        ns = ALIASES.get(name) or next((n for n in ORDER if n.value == name), None)
        if ns is None:
            known = ", ".join(n.value for n in ORDER)
            raise ValueError(f"{where}: unknown namespace {name!r} (known: {known})")
        found.add(ns)
    return frozenset(found)


# --- policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleIsolation:
    """One role's rules: what its jobs get by default, and what it may leave out."""

    default: frozenset[Namespace] = NONE
    # May a request ask for less than ``default``?
    allow_opt_out: bool = True
    # May its jobs use the host's network (run without a network namespace)?
    allow_network: bool = True
    # With a mount namespace: the whole file system read-only and a minimal /dev, but for
    # ``writable`` (absolute paths the operator names; every job of the role shares them).
    read_only: bool = False
    writable: tuple[str, ...] = ()
    oom_score_adj: int = 0
    # The syscall filter its jobs run under (see jobd.launch.seccomp): none unless set.
    syscalls: FilterSpec = field(default_factory=lambda: FilterSpec(enabled=False))

    def __post_init__(self) -> None:
        if not self.allow_network and Namespace.NETWORK not in self.default:
            raise ValueError(
                "allow_network = false needs network in default (add it, or allow the network)"
            )
        for path in self.writable:
            if not path.startswith("/") or "\0" in path:
                raise ValueError(f"writable: {path!r} is not an absolute path")
        if not -1000 <= self.oom_score_adj <= 1000:
            raise ValueError("oom_score_adj must be between -1000 and 1000")

    @property
    def required(self) -> frozenset[Namespace]:
        """What every job of the role must have."""
        required = NONE if self.allow_opt_out else self.default
        return required | ({Namespace.NETWORK} if not self.allow_network else NONE)

    def describe(self) -> str:
        rules = [f"default {names(self.default)}"]
        if not self.allow_opt_out and self.default:
            rules.append("may not opt out")
        rules.append("host network allowed" if self.allow_network else "no host network")
        if self.read_only:
            where = ", ".join(self.writable) or "nothing"
            rules.append(f"file system read-only (writable: {where}; private temporary "
                         "directories)")
        rules.append(f"oom_score_adj {self.oom_score_adj}")
        rules.append(f"syscall filter {self.syscalls.describe()}")
        return ", ".join(rules)


BUILTIN_ROLES: Mapping[Role, RoleIsolation] = {
    Role.USER: RoleIsolation(ALL, allow_opt_out=False, allow_network=False, read_only=True,
                             oom_score_adj=USER_OOM_SCORE_ADJ, syscalls=FilterSpec()),
    Role.ADMIN: RoleIsolation(NONE, allow_opt_out=True, allow_network=True),
}


@dataclass(frozen=True)
class Availability:
    """Which namespaces this host lets the daemon create, and why the others not; and
    whether it can make a job's file system read-only."""

    available: frozenset[Namespace] = NONE
    reasons: Mapping[Namespace, str] = field(default_factory=dict)
    read_only: bool = False
    read_only_reason: str = "isolation is not set up"
    # "" when syscall filters can be built and installed here, else why not.
    seccomp_reason: str = "isolation is not set up"

    def why(self, ns: Namespace) -> str:
        return self.reasons.get(ns, "isolation is not set up")

    def describe(self) -> str:
        """Lines for ``jobd --check``."""
        lines = [f"isolation: namespaces available: {names(self.available)}"]
        for ns in ORDER:
            if ns not in self.available:
                lines.append(f"  {ns.value}: unavailable: {self.why(ns)}")
        lines.append("isolation: read-only file system: " + (
            "available" if self.read_only else f"unavailable: {self.read_only_reason}"))
        lines.append("isolation: syscall filters: " + (
            f"unavailable: {self.seccomp_reason}" if self.seccomp_reason else "available"))
        return "\n".join(lines)


@dataclass(frozen=True)
class IsolationPolicy:
    roles: Mapping[Role, RoleIsolation] = field(default_factory=lambda: dict(BUILTIN_ROLES))

    def rule(self, role: Role) -> RoleIsolation:
        return self.roles.get(role) or BUILTIN_ROLES.get(role) or RoleIsolation()

    def effective(
        self, request: frozenset[Namespace] | None, role: Role, availability: Availability
    ) -> frozenset[Namespace]:
        """The namespaces a job gets: ``request`` (None: the role's default), checked.
        What the role requires is never dropped: if this host cannot give it, no job of the
        role starts (the defaults are safe; the configuration loosens them)."""
        rule = self.rule(role)
        available = availability.available
        chosen = rule.default & available if request is None else request
        missing = (chosen | rule.required) - available
        if missing:
            reasons = "; ".join(f"{ns.value}: {availability.why(ns)}"
                                for ns in ORDER if ns in missing)
            required = missing & rule.required
            whose = (f"; the {role.value} role requires {'them' if len(required) > 1 else 'it'}"
                     if required and (request is None or not missing <= request) else "")
            raise FailedPrecondition(
                f"isolation: {names(missing)} namespace{_s(missing)} not available on this "
                f"server ({reasons}){whose}"
            )
        lacking = rule.required - chosen
        if lacking:
            if not rule.allow_opt_out:
                why = f"its default isolation ({names(rule.default)}) may not be reduced"
            else:
                why = "it may not use the host's network"
            raise PermissionDenied(
                f"isolation: the {role.value} role may not run jobs without {names(lacking)} "
                f"isolation: {why}"
            )
        if rule.read_only and Namespace.MOUNT in chosen and not availability.read_only:
            raise FailedPrecondition(
                f"isolation: the {role.value} role's jobs see a read-only file system, which "
                f"this server cannot make ({availability.read_only_reason})"
            )
        if rule.syscalls.enabled and availability.seccomp_reason:
            raise FailedPrecondition(
                f"isolation: the {role.value} role's jobs run under a syscall filter, which "
                f"this server cannot install ({availability.seccomp_reason})"
            )
        return chosen

    def unavailable_defaults(self, availability: Availability) -> dict[Role, frozenset[Namespace]]:
        """Per role, what its default asks for that this host cannot give."""
        dropped = {}
        for role in Role:
            missing = self.rule(role).default - availability.available
            if missing:
                dropped[role] = missing
        return dropped

    def describe(self) -> list[str]:
        return [f"isolation for {role.value}: {self.rule(role).describe()}" for role in Role]


def _s(items: frozenset[Namespace]) -> str:
    return "s" if len(items) > 1 else ""


ROLE_KEYS = ("default", "allow_opt_out", "allow_network", "read_only", "writable",
             "oom_score_adj", "syscall_filter", "syscalls_deny", "syscalls_allow")


def parse_role_table(table: Mapping[str, object], where: str, base: RoleIsolation) -> RoleIsolation:
    """A config file's ``[isolation.ROLE]``: default = [...] | "all" | "none",
    allow_opt_out, allow_network, read_only = bool, writable = ["/path", ...],
    oom_score_adj = int, syscall_filter = "default" | "none", syscalls_deny and
    syscalls_allow = ["name", ...]; keys left out keep ``base``'s."""
    unknown = sorted(set(table) - set(ROLE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    default = base.default
    if "default" in table:
        default = parse_names(table["default"], f"{where}: default")
    flags = {"allow_opt_out": base.allow_opt_out, "allow_network": base.allow_network,
             "read_only": base.read_only}
    for name in flags:
        if name in table:
            value = table[name]
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be true or false")
            flags[name] = value
    writable = base.writable
    if "writable" in table:
        value = table["writable"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: writable must be a list of absolute paths")
        writable = tuple(value)
    oom = base.oom_score_adj
    if "oom_score_adj" in table:
        value = table["oom_score_adj"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where}: oom_score_adj must be a whole number")
        oom = value
    syscalls = _parse_syscalls(table, where, base.syscalls)
    try:
        return RoleIsolation(default, writable=writable, oom_score_adj=oom, syscalls=syscalls,
                             **flags)  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _parse_syscalls(table: Mapping[str, object], where: str, base: FilterSpec) -> FilterSpec:
    enabled = base.enabled
    if "syscall_filter" in table:
        value = table["syscall_filter"]
        if value not in ("default", "none"):
            raise ValueError(f'{where}: syscall_filter must be "default" or "none"')
        enabled = value == "default"
    lists = {"deny": base.deny, "allow": base.allow}
    for name in lists:
        key = f"syscalls_{name}"
        if key in table:
            value = table[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}: {key} must be a list of system call names")
            lists[name] = tuple(value)
    if (lists["deny"] or lists["allow"]) and not enabled:
        raise ValueError(f'{where}: syscalls_deny and syscalls_allow need syscall_filter = '
                         '"default"')
    return FilterSpec(enabled, lists["deny"], lists["allow"])
