"""Authorization: every caller x action x target from one table; the role table parser."""

from __future__ import annotations

import itertools

import pytest

from jobd.model.errors import NotFound, PermissionDenied
from jobd.policy.auth import (
    DEFAULT_ROLES,
    JOB_ACTIONS,
    Action,
    Identity,
    Role,
    authorize,
    parse_roles,
)

ROLES = {"root": Role.ADMIN, "alice": Role.USER, "bob": Role.USER}
JOB_OWNER = "alice"  # the job every job action is asked about
JOB_ID = "0b5e6a3c-job"

# Callers: how each one is identified from its certificate.
CALLERS: dict[str, str | None] = {
    "admin": "root",
    "owner": "alice",  # a user who owns the job
    "other_user": "bob",  # a user who does not
    "unknown": "mallory",  # a valid certificate, but not in the role table
    "no_cn": None,  # a certificate without a Common Name
}

OK, NF, PD = "ok", NotFound, PermissionDenied

# Targets. Job actions: the job is own (owned by alice), someone else's (owned by carol), or
# missing. LIST: the owner filter is none, the caller itself, or someone else. START: none.
JOB_TARGETS = ("alice_job", "carols_job", "missing")
LIST_TARGETS = ("no_filter", "self", "other")

# The one table: caller -> target -> expected outcome.
EXPECTED: dict[str, dict[str, object]] = {
    #              job actions (STOP, STATUS, STREAM)   LIST                            START
    "admin":      {"alice_job": OK, "carols_job": OK, "missing": NF,
                   "no_filter": OK, "self": OK, "other": OK, "start": OK},
    "owner":      {"alice_job": OK, "carols_job": NF, "missing": NF,
                   "no_filter": OK, "self": OK, "other": PD, "start": OK},
    "other_user": {"alice_job": NF, "carols_job": NF, "missing": NF,
                   "no_filter": OK, "self": OK, "other": PD, "start": OK},
    "unknown":    {"alice_job": PD, "carols_job": PD, "missing": PD,
                   "no_filter": PD, "self": PD, "other": PD, "start": PD},
    "no_cn":      {"alice_job": PD, "carols_job": PD, "missing": PD,
                   "no_filter": PD, "self": PD, "other": PD, "start": PD},
}  # fmt: skip


def targets_of(action: Action) -> tuple[str, ...]:
    if action in JOB_ACTIONS:
        return JOB_TARGETS
    if action is Action.LIST:
        return LIST_TARGETS
    return ("start",)


CASES = [
    (caller, action, target)
    for caller, action in itertools.product(CALLERS, Action)
    for target in targets_of(action)
]


def call(identity: Identity, action: Action, target: str) -> None:
    if action in JOB_ACTIONS:
        owner = {"alice_job": JOB_OWNER, "carols_job": "carol", "missing": None}[target]
        authorize(identity, action, job_id=JOB_ID, owner=owner)
    elif action is Action.LIST:
        owner_filter = {"no_filter": "", "self": identity.name, "other": "dave"}[target]
        authorize(identity, action, owner=owner_filter)
    else:
        authorize(identity, action)


def test_table_covers_every_action_and_caller() -> None:
    assert set(Action) == JOB_ACTIONS | {Action.LIST, Action.START}
    assert set(EXPECTED) == set(CALLERS)
    for row in EXPECTED.values():
        assert set(row) == {*JOB_TARGETS, *LIST_TARGETS, "start"}
    # 5 callers x (3 job actions x 3 jobs + LIST x 3 filters + START)
    assert len(CASES) == 5 * (3 * 3 + 3 + 1)


@pytest.mark.parametrize(
    ("caller", "action", "target"), CASES, ids=lambda v: getattr(v, "value", v)
)
def test_authorize(caller: str, action: Action, target: str) -> None:
    identity = Identity.lookup(CALLERS[caller], ROLES)
    expected = EXPECTED[caller][target]
    if expected == OK:
        call(identity, action, target)  # does not raise
        return
    assert isinstance(expected, type) and issubclass(expected, Exception)
    with pytest.raises(expected) as info:
        call(identity, action, target)
    # Exactly that class, not some other subclass of JobdError.
    assert type(info.value) is expected
    if expected is NotFound:
        # Someone else's job looks exactly like a missing one: the id is all it names.
        assert str(info.value) == f"job {JOB_ID} not found"


@pytest.mark.parametrize("action", sorted(JOB_ACTIONS, key=lambda a: str(a.value)))
def test_other_users_job_indistinguishable_from_missing(action: Action) -> None:
    bob = Identity.lookup("bob", ROLES)
    errors = []
    for owner in ("alice", None):
        with pytest.raises(NotFound) as info:
            authorize(bob, action, job_id=JOB_ID, owner=owner)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_list_none_filter_is_no_filter() -> None:
    authorize(Identity.lookup("bob", ROLES), Action.LIST, owner=None)
    authorize(Identity.lookup("root", ROLES), Action.LIST, owner=None)


def test_refusal_messages_name_the_caller() -> None:
    with pytest.raises(PermissionDenied, match="identity 'mallory' has no role on this server"):
        authorize(Identity.lookup("mallory", ROLES), Action.START)
    with pytest.raises(PermissionDenied, match="a certificate without a CN has no role"):
        authorize(Identity.lookup(None, ROLES), Action.START)
    with pytest.raises(PermissionDenied, match="bob may list only its own jobs"):
        authorize(Identity.lookup("bob", ROLES), Action.LIST, owner="alice")


def test_lookup() -> None:
    assert Identity.lookup("root", ROLES) == Identity("root", Role.ADMIN)
    assert Identity.lookup("alice", ROLES) == Identity("alice", Role.USER)
    assert Identity.lookup("mallory", ROLES) == Identity("mallory", None)
    assert Identity.lookup(None, ROLES) == Identity("", None)
    # A table entry for the empty name never gives a certificate without a CN a role.
    assert Identity.lookup(None, {"": Role.ADMIN}) == Identity("", None)


def test_default_roles_match_gen_sh_identities() -> None:
    assert dict(DEFAULT_ROLES) == {"client_0": Role.ADMIN, "client_1": Role.USER}


def test_parse_roles_good() -> None:
    assert parse_roles({"client_0": "admin", "alice": "user"}) == {
        "client_0": Role.ADMIN,
        "alice": Role.USER,
    }
    assert parse_roles({}) == {}


@pytest.mark.parametrize("value", ["root", "Admin", "", " user", 1, True, ["admin"], {"a": "b"}])
def test_parse_roles_bad(value: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_roles({"alice": "user", "eve": value})
    assert str(info.value) == f"identity 'eve': role {value!r} is not one of admin, user"
