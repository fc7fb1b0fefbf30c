"""The policy in force is one value: it cannot be changed in place, and SIGHUP replaces it
whole or not at all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jobd.cgroups.none import NoneBackend
from jobd.config import Config
from jobd.policy.auth import Role
from jobd.policy.current import CurrentPolicy, Policy
from jobd.policy.quotas import Quota, QuotaPolicy
from jobd.server import reload


def test_a_policy_cannot_be_changed_in_place() -> None:
    roles = {"alice": Role.USER}
    policy = Policy(roles=roles)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.quotas = QuotaPolicy()  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.roles["mallory"] = Role.ADMIN  # type: ignore[index]
    roles["mallory"] = Role.ADMIN  # the caller's dict is not the policy's
    assert dict(policy.roles) == {"alice": Role.USER}


def test_sighup_swaps_the_whole_policy_or_nothing(tmp_path: Path) -> None:
    file = tmp_path / "jobd.toml"
    config = Config(config_file=file, state_dir=tmp_path)
    current = CurrentPolicy(Policy(revoked=frozenset({7})))
    before = current.now

    file.write_text('[identities]\nalice = "admin"\n[quotas.default]\nrunning = 3\n')
    reload(config, current, NoneBackend("none here"))
    after = current.now
    assert after is not before
    assert dict(after.roles) == {"alice": Role.ADMIN}
    assert after.quotas.of("alice") == Quota(running=3)
    assert after.revoked == frozenset({7})  # the CRL is reloaded on its own

    # A file that does not load, half-way through: nothing changes, not even the roles.
    file.write_text('[identities]\nbob = "admin"\n[quotas.default]\nrunning = -1\n')
    reload(config, current, NoneBackend("none here"))
    assert current.now is after
