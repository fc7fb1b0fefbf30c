"""Which account a job runs as: lookup of names and numbers, the [run_as] table, precedence."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from jobd.config import Config, ConfigError
from jobd.model.namespaces import ALL, Namespace
from jobd.policy.accounts import (
    Account,
    RunAsPolicy,
    builtin_account,
    daemon_account,
    lookup,
    parse_table,
    shared_without_pid_namespace,
)
from jobd.policy.auth import Role
from jobd.policy.isolation import BUILTIN_ROLES, IsolationPolicy, RoleIsolation

ROOT = pwd.getpwuid(0)


def test_a_name_gives_its_primary_and_supplementary_groups() -> None:
    account = lookup("root")
    assert (account.name, account.uid, account.gid) == ("root", 0, ROOT.pw_gid)
    expected = {g for g in os.getgrouplist("root", ROOT.pw_gid) if g != ROOT.pw_gid}
    assert set(account.groups) == expected
    assert account.home == (ROOT.pw_dir if os.path.isdir(ROOT.pw_dir) else "/")
    assert account.root


def test_a_named_group_is_exactly_that_group() -> None:
    group = grp.getgrgid(0).gr_name
    account = lookup(f"root:{group}")
    assert (account.gid, account.group, account.groups) == (0, group, ())
    assert lookup("root:0") == account


def test_numbers_without_a_passwd_entry() -> None:
    uid = next(n for n in range(61000, 62000) if not _has_uid(n))
    account = lookup(str(uid))
    assert (account.name, account.uid, account.gid, account.groups) == (str(uid), uid, uid, ())
    assert account.home == "/"
    assert account.describe() == f"{uid}:{_group(uid)} ({uid}:{uid})"
    assert lookup(f"{uid}:{uid + 1}").gid == uid + 1


def _has_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("jobd-no-such-user", "no such user 'jobd-no-such-user'"),
        ("root:jobd-no-such-group", "no such group 'jobd-no-such-group'"),
        ("", "is not USER or USER:GROUP"),
        ("root:", "is not USER or USER:GROUP"),
        (":root", "is not USER or USER:GROUP"),
    ],
)
def test_unknown_accounts_are_errors_that_name_the_setting(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="run_as.user: .*" + message):
        lookup(spec, "run_as.user")


def test_built_in_accounts() -> None:
    assert builtin_account(Role.ADMIN).uid == 0
    user = builtin_account(Role.USER)
    assert user.uid == 65534 and user.uid != 0
    assert user.groups == () or 0 not in user.groups


def test_daemon_account_is_the_effective_user() -> None:
    assert daemon_account().uid == os.geteuid()


def test_the_table_per_role_and_per_identity_with_identity_first() -> None:
    policy = parse_table({"user": "root:0", "identity": {"alice": "61001:61001"}}, "f.toml")
    assert policy.account("bob", Role.USER) == lookup("root:0")
    assert policy.account("alice", Role.USER).uid == 61001
    assert policy.account("alice", Role.ADMIN).uid == 61001
    assert policy.account("carol", Role.ADMIN) == builtin_account(Role.ADMIN)
    assert parse_table({"admin": 61002}, "f").account("x", Role.ADMIN).uid == 61002


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"operator": "root"}, r"run_as.operator: no such role \(known: admin, user"),
        ({"user": True}, r"run_as.user: expected \"USER\" or \"USER:GROUP\""),
        ({"user": ["root"]}, r"run_as.user: expected"),
        ({"identity": "root"}, r"\[run_as.identity\] must be a table"),
        ({"identity": {"alice": "jobd-nope"}}, r"run_as.identity.alice: no such user"),
    ],
)
def test_bad_tables(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="f.toml: " + message):
        parse_table(table, "f.toml")


def test_a_daemon_that_cannot_switch_runs_every_job_as_itself() -> None:
    policy = RunAsPolicy({Role.USER: lookup("61001:61001")})
    assert policy.effective("bob", Role.USER, switch=True).uid == 61001
    assert policy.effective("bob", Role.USER, switch=False) == daemon_account()


def test_describe_lists_roles_and_identities() -> None:
    policy = RunAsPolicy(identities={"alice": Account("alice", 61001, 61001, "61001")})
    lines = policy.describe()
    assert "run as for admin: root:" in lines[0]
    assert lines[-1] == "run as for identity alice: alice:61001 (61001:61001)"


def test_the_config_file_table(tmp_path: Path) -> None:
    path = tmp_path / "jobd.toml"
    path.write_text('[run_as]\nuser = "root:0"\n[run_as.identity]\nalice = 61001\n')
    config = Config()
    config.apply_file(path)
    assert config.run_as.account("bob", Role.USER) == lookup("root:0")
    assert config.run_as.account("alice", Role.USER).uid == 61001
    path.write_text('[run_as]\nuser = "jobd-no-such-user"\n')
    with pytest.raises(ConfigError, match=f"{path}: run_as.user: no such user"):
        Config().apply_file(path)


ALL_HERE = frozenset(Namespace)
NETWORK_ONLY = RoleIsolation(frozenset({Namespace.NETWORK}), allow_opt_out=False,
                             allow_network=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="without root every job runs as the daemon")
@pytest.mark.parametrize(
    ("user_rule", "available", "warned"),
    [
        (None, ALL_HERE, False),  # built in: user jobs must run in their own PID namespace
        (RoleIsolation(ALL, allow_opt_out=True, allow_network=False), ALL_HERE, True),
        (NETWORK_ONLY, ALL_HERE, True),  # no PID namespace in the default
        (None, ALL_HERE - {Namespace.PID}, True),  # no PID namespaces on this host
    ],
)
def test_a_shared_account_without_pid_namespaces_is_warned_about(
    user_rule: RoleIsolation | None, available: frozenset[Namespace], warned: bool
) -> None:
    roles = {Role.USER: user_rule} if user_rule else {}
    isolation = IsolationPolicy({**BUILTIN_ROLES, **roles})
    warnings = shared_without_pid_namespace(RunAsPolicy(), isolation, available)
    # Admins run as root by default: trusted with everything anyway, never warned about.
    assert [w.split()[0] for w in warnings] == (["user"] if warned else [])
    if warned:
        assert "all run as nobody" in warnings[0] and "[run_as.identity]" in warnings[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="without root every job runs as the daemon")
def test_an_admin_role_with_an_account_of_its_own_is_warned_about_too() -> None:
    policy = RunAsPolicy({Role.ADMIN: lookup("65534:65534")})
    warnings = shared_without_pid_namespace(policy, IsolationPolicy(), ALL_HERE)
    assert [w.split()[0] for w in warnings] == ["admin"]
