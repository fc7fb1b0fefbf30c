"""The ceilings policy, pure: the host's reserve, each identity's share, a user's maxima."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_unit import config_from

from jobd.config import ConfigError
from jobd.model.job import LimitRequest
from jobd.model.resources import Ceiling
from jobd.policy.auth import Role
from jobd.policy.ceilings import CeilingPolicy, Host, builtin_maxima, merge_maxima

GiB, MiB = 1 << 30, 1 << 20
HOST = Host(memory=16 * GiB, tasks=32768, cpus=4)


def test_the_built_in_reserve_is_a_tenth_of_the_host_at_least_512m_and_1024_tasks() -> None:
    assert CeilingPolicy().jobs(HOST) == Ceiling(16 * GiB - int(1.6 * GiB), 32768 - 3276, 10)
    small = Host(memory=2 * GiB, tasks=4096, cpus=1)
    assert CeilingPolicy().jobs(small) == Ceiling(2 * GiB - 512 * MiB, 4096 - 1024, 10)


def test_all_jobs_weigh_a_tenth_of_a_group_on_the_cpu_and_no_slice_weighs_differently() -> None:
    assert CeilingPolicy().jobs(HOST).cpu_weight == 10
    assert CeilingPolicy(jobs_cpu_weight=100).jobs(HOST).cpu_weight == 100
    # Slices split what jobs get among identities evenly, as before.
    assert CeilingPolicy().each_identity(HOST).cpu_weight is None


def test_each_identity_gets_half_of_what_all_jobs_may_use() -> None:
    jobs = CeilingPolicy().jobs(HOST)
    assert jobs.memory is not None and jobs.pids is not None
    assert CeilingPolicy().each_identity(HOST) == Ceiling(jobs.memory // 2, jobs.pids // 2)


def test_configured_amounts_and_shares() -> None:
    policy = CeilingPolicy(reserve_memory=4 * GiB, reserve_pids=2768, identity_memory=0.25,
                           identity_pids=1000)  # fmt: skip
    assert policy.jobs(HOST) == Ceiling(12 * GiB, 30000, 10)
    assert policy.each_identity(HOST) == Ceiling(3 * GiB, 1000)
    # An identity's amount never exceeds what all jobs may use.
    assert CeilingPolicy(identity_pids=10**9).each_identity(HOST).pids == 32768 - 3276


def test_a_reserve_larger_than_the_host_still_leaves_one_job_its_place() -> None:
    assert CeilingPolicy(reserve_memory=64 * GiB, reserve_pids=10**6).jobs(HOST) == Ceiling(
        64 * MiB, 64, 10)


def test_a_user_may_ask_at_most_its_identitys_ceiling_and_the_hosts_cpus() -> None:
    each = CeilingPolicy().each_identity(HOST)
    assert builtin_maxima(CeilingPolicy(), HOST) == {
        Role.USER: LimitRequest(cpu=4.0, memory=each.memory, pids=each.pids)}


def test_a_configured_maximum_replaces_the_built_in_one_limit_by_limit() -> None:
    builtin = {Role.USER: LimitRequest(cpu=4.0, memory=8 * GiB, pids=1000)}
    configured = {Role.USER: LimitRequest(memory=GiB), Role.ADMIN: LimitRequest(pids=5)}
    assert merge_maxima(configured, builtin) == {
        Role.USER: LimitRequest(cpu=4.0, memory=GiB, pids=1000),
        Role.ADMIN: LimitRequest(pids=5),
    }


def test_the_host_is_read_from_proc() -> None:
    host = Host.read()
    assert host.memory > 0 and host.tasks > 0 and host.cpus >= 1


def test_config_tables(tmp_path: Path) -> None:
    config = config_from(tmp_path, """
        [limits.reserve]
        memory = "4G"
        pids = 2768
        cpu_weight = 100
        [limits.identity]
        memory = "25%"
        pids = 1000
    """)  # fmt: skip
    assert config.ceilings == CeilingPolicy(4 * GiB, 2768, 0.25, 1000, jobs_cpu_weight=100)
    assert config_from(tmp_path, "").ceilings == CeilingPolicy()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[limits.reserve]\nmemory = "lots"\n', "[limits.reserve]: memory: invalid size"),
        ("[limits.reserve]\npids = -1\n", "[limits.reserve]: pids: must be a positive whole"),
        ("[limits.reserve]\ncpu = 1\n", "[limits.reserve]: unknown setting(s) cpu"),
        ("[limits.reserve]\ncpu_weight = 0\n", "cpu_weight: must be a positive whole number"),
        ('[limits.reserve]\ncpu_weight = "10"\n', "cpu_weight: must be a positive whole"),
        ("[limits.reserve]\ncpu_weight = 10001\n", "cpu_weight: at most 10000, not 10001"),
        ('[limits.identity]\nmemory = "150%"\n', "must be above 0% and at most 100%"),
        ('[limits.identity]\npids = "x%"\n', "[limits.identity]: pids: 'x%' is not a percentage"),
    ],
)
def test_config_errors_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from(tmp_path, text)
    assert message in str(info.value)
