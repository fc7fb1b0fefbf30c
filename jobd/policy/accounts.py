"""Which Unix account a job runs as: per identity, else per role, from the configuration.

Built in, a ``user`` role's jobs run as ``nobody`` (its own group, no supplementary groups)
and an ``admin``'s as ``root``. The config's ``[run_as]`` table names an account per role and
``[run_as.identity]`` one per certificate identity: ``"NAME"`` (that user, its primary group
and its supplementary groups from the group database), ``"NAME:GROUP"`` (exactly that group,
no supplementary groups), or numbers (``"61000:61000"``; a uid with no passwd entry gets the
group of the same number unless one is given). Accounts are looked up when the configuration
is read, so a missing user is a configuration error, never a job's.

A daemon that is not root cannot switch accounts: its jobs all run as the daemon's own user,
which ``jobd --check`` and the start-up log say.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobd.model.namespaces import Namespace
from jobd.policy.auth import Role
from jobd.policy.isolation import IsolationPolicy

NOBODY_UID = 65534  # the traditional overflow id, where "nobody" is missing from passwd


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    group: str
    # Supplementary groups; empty: none at all.
    groups: tuple[int, ...] = ()
    home: str = "/"

    @property
    def root(self) -> bool:
        return self.uid == 0

    def describe(self) -> str:
        """``nobody:nogroup (65534:65534)``: names, then the ids, as status shows them."""
        return f"{self.name}:{self.group} ({self.uid}:{self.gid})"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _gid_of(text: str, where: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"{where}: no such group {text!r}") from None


def lookup(spec: str, where: str = "run_as") -> Account:
    """``NAME``, ``NAME:GROUP``, ``UID`` or ``UID:GID`` as an Account; ValueError if unknown."""
    user, _, group = spec.partition(":")
    if not user or (":" in spec and not group):
        raise ValueError(f"{where}: {spec!r} is not USER or USER:GROUP")
    try:
        entry: pwd.struct_passwd | None = (
            pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        )
    except KeyError:
        if not user.isdigit():
            raise ValueError(f"{where}: no such user {user!r}") from None
        entry = None
    uid = entry.pw_uid if entry else int(user)
    name = entry.pw_name if entry else user
    home = entry.pw_dir if entry and os.path.isdir(entry.pw_dir) else "/"
    if group:
        gid = _gid_of(group, where)
        return Account(name, uid, gid, _group_name(gid), (), home)
    gid = entry.pw_gid if entry else uid
    groups = tuple(g for g in os.getgrouplist(name, gid) if g != gid) if entry else ()
    return Account(name, uid, gid, _group_name(gid), groups, home)


def builtin_account(role: Role) -> Account:
    if role is Role.ADMIN:
        return lookup("root")
    try:
        return lookup("nobody")
    except ValueError:
        return lookup(f"{NOBODY_UID}:{NOBODY_UID}")


@functools.cache
def daemon_account() -> Account:
    """The account the daemon itself runs as (its ids do not change while it runs)."""
    return lookup(str(os.geteuid())) if os.geteuid() else lookup("root")


@dataclass(frozen=True)
class RunAsPolicy:
    roles: Mapping[Role, Account] = field(default_factory=dict)
    identities: Mapping[str, Account] = field(default_factory=dict)

    @functools.cached_property
    def _builtin(self) -> dict[Role, Account]:
        # Looked up once per policy (a reload makes a new one), not on every job start.
        return {role: builtin_account(role) for role in Role}

    def account(self, identity: str, role: Role) -> Account:
        """What the jobs of ``identity`` (with ``role``) run as, before the daemon's own
        limits (see ``effective``)."""
        found = self.identities.get(identity) or self.roles.get(role)
        return found if found is not None else self._builtin[role]

    def effective(self, identity: str, role: Role, switch: bool) -> Account:
        """``switch`` False (the daemon is not root): every job runs as the daemon."""
        return self.account(identity, role) if switch else daemon_account()

    def describe(self) -> list[str]:
        lines = [f"run as for {role.value}: {self.account('', role).describe()}" for role in Role]
        lines += [f"run as for identity {name}: {account.describe()}"
                  for name, account in sorted(self.identities.items())]  # fmt: skip
        return lines


def shared_without_pid_namespace(
    policy: RunAsPolicy, isolation: IsolationPolicy, available: frozenset[Namespace]
) -> list[str]:
    """Why some jobs of different identities could signal each other: their role gives them
    one account (not root's: root's jobs are trusted with everything anyway) and does not
    make each run in a PID namespace of its own. One line per such role, for the log and
    ``jobd --check``."""
    if os.geteuid() != 0:
        return []  # every job runs as the daemon then, which --check says already
    warnings = []
    for role in Role:
        account = policy.account("", role)
        pid_for_all = Namespace.PID in isolation.rule(role).required & available
        if account.uid != 0 and not pid_for_all:
            warnings.append(
                f"{role.value} jobs of different identities all run as {account.name} and need "
                f"not run in a PID namespace, so they can signal each other: give identities "
                f"their own accounts ([run_as.identity]) or make PID isolation required "
                f"([isolation.{role.value}] with pid in default and allow_opt_out = false)"
            )
    return warnings


def parse_table(table: Mapping[str, object], where: str) -> RunAsPolicy:
    """``[run_as]``: ROLE = "ACCOUNT" for each role, and ``[run_as.identity]``: CN = "ACCOUNT"."""
    roles: dict[Role, Account] = {}
    identities: dict[str, Account] = {}
    known = ", ".join(role.value for role in Role)
    for key, value in table.items():
        if key == "identity":
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: [run_as.identity] must be a table of NAME = \"USER\"")
            for name, spec in value.items():
                identities[name] = _account(spec, f"{where}: run_as.identity.{name}")
            continue
        try:
            role = Role(key)
        except ValueError:
            raise ValueError(
                f"{where}: run_as.{key}: no such role (known: {known}; per identity: "
                "[run_as.identity])"
            ) from None
        roles[role] = _account(value, f"{where}: run_as.{key}")
    return RunAsPolicy(roles, identities)


def _account(value: object, where: str) -> Account:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected \"USER\" or \"USER:GROUP\"")
    return lookup(value, where)
