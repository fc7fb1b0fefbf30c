"""Who may do what: identities from certificates, roles from a table, one pure decision.

The identity is the verified client certificate's subject Common Name and nothing else. A
``user`` sees only its own jobs: another user's job is reported as not found, exactly like a
job that does not exist, so job ids reveal nothing. An identity missing from the role table is
refused everything.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from jobd.model.errors import NotFound, PermissionDenied


class Role(enum.Enum):
    ADMIN = "admin"
    USER = "user"


class Action(enum.Enum):
    START = "start"
    STOP = "stop"
    STATUS = "status"
    STREAM = "stream"
    LIST = "list"


# The identities in the certificates that ca/gen.sh makes; a config file replaces the table.
DEFAULT_ROLES: Mapping[str, Role] = {"client_0": Role.ADMIN, "client_1": Role.USER}

JOB_ACTIONS = frozenset({Action.STOP, Action.STATUS, Action.STREAM})


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role | None

    @classmethod
    def lookup(cls, name: str | None, roles: Mapping[str, Role]) -> Identity:
        if name is None:
            return cls("", None)
        return cls(name, roles.get(name))


def authorize(
    identity: Identity, action: Action, *, job_id: str = "", owner: str | None = None
) -> None:
    """Raise unless ``identity`` may do ``action``.

    For job actions ``owner`` is the job's owner (None: no such job). For LIST it is the owner
    filter asked for ("" or None: no filter).
    """
    if identity.role is None:
        who = f"identity {identity.name!r}" if identity.name else "a certificate without a CN"
        raise PermissionDenied(f"{who} has no role on this server")
    if action in JOB_ACTIONS:
        if owner is None or (identity.role is Role.USER and owner != identity.name):
            raise NotFound(f"job {job_id} not found")
        return
    if action is Action.LIST:
        if identity.role is Role.USER and owner and owner != identity.name:
            raise PermissionDenied(f"{identity.name} may list only its own jobs")
        return
    if action is Action.START:
        return
    raise AssertionError(f"unhandled action {action}")


def parse_roles(table: Mapping[str, object]) -> dict[str, Role]:
    """Validate a config file's ``[identities]`` table (identity -> role name)."""
    roles: dict[str, Role] = {}
    for name, value in table.items():
        try:
            roles[name] = Role(value)
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(f"identity {name!r}: role {value!r} is not one of {allowed}") from None
    return roles
