"""Quotas: the start-rate window with a fake clock, per-identity isolation, the config tables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers_unit import open_manager

from jobd.cgroups.none import NoneBackend
from jobd.config import Config, ConfigError
from jobd.model.errors import ResourceExhausted, SpawnFailed
from jobd.model.job import JobSpec
from jobd.model.resources import Limits
from jobd.policy.quotas import MAXIMUM, Quota, QuotaPolicy, StartRate, parse_table, refusal


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_allows_the_limit_then_refuses() -> None:
    clock = FakeClock()
    rate = StartRate(clock)
    assert [rate.allow("a", 3) for _ in range(4)] == [True, True, True, False]
    assert rate.counted("a") == 3  # a refused start is not counted


def test_window_slides_at_exactly_sixty_seconds() -> None:
    clock = FakeClock()
    rate = StartRate(clock)
    assert rate.allow("a", 2)
    clock.now += 30
    assert rate.allow("a", 2)
    clock.now += 29.999
    assert not rate.allow("a", 2)  # the first start is 59.999 s old: still inside
    clock.now += 0.001
    assert rate.allow("a", 2)  # exactly 60 s: it has left the window
    assert not rate.allow("a", 2)  # the second (30 s old) and the new one fill it
    clock.now += 30
    assert rate.allow("a", 2)


def test_window_identities_are_independent() -> None:
    clock = FakeClock()
    rate = StartRate(clock)
    assert rate.allow("a", 1)
    assert not rate.allow("a", 1)
    assert rate.allow("b", 1)  # a at its quota does not touch b
    assert rate.counted("a") == rate.counted("b") == 1


def test_window_limit_changes_apply_to_starts_already_counted() -> None:
    clock = FakeClock()
    rate = StartRate(clock)
    assert all(rate.allow("a", 5) for _ in range(5))
    assert not rate.allow("a", 5)
    assert rate.allow("a", 6)  # raised (a reload)
    assert not rate.allow("a", 3)  # lowered: six already in the window


def test_zero_refuses_every_start() -> None:
    rate = StartRate(FakeClock())
    assert not rate.allow("a", 0)
    assert rate.counted("a") == 0


def test_policy_default_and_override() -> None:
    policy = parse_table(
        {"default": {"running": 50}, "identity": {"alice": {"streams": 2}}}, "f.toml"
    )
    assert policy.of("bob") == Quota(running=50)
    assert policy.of("alice") == Quota(running=50, streams=2)  # the rest from the default
    assert QuotaPolicy().of("anyone") == Quota(1000, 600, 1000)


def test_refusal_names_the_quota() -> None:
    assert refusal(2, "running jobs", "client_1") == "quota reached: 2 running jobs for client_1"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"default": {"runing": 1}}, "[quotas.default]: unknown quota(s) runing"),
        ({"limit": {}}, "[quotas] holds only [quotas.default] and [quotas.identity.NAME]"),
        ({"default": 3}, "[quotas.default] must be a table"),
        ({"identity": {"alice": {"running": -1}}},
         "[quotas.identity.alice]: running must be a whole number from 0 to 1000000, not -1"),
        ({"identity": {"alice": {"streams": 1.5}}}, "streams must be a whole number"),
        ({"identity": {"alice": {"streams": True}}}, "streams must be a whole number"),
        ({"default": {"starts_per_minute": "5"}}, "starts_per_minute must be a whole number"),
        ({"default": {"running": MAXIMUM + 1}}, "running must be a whole number"),
        ({"identity": {"alice": 1}}, "[quotas.identity.alice] must be a table"),
        ({"identity": 1}, "[quotas.identity] must hold [quotas.identity.NAME] tables"),
        ({"default": {"output": "lots"}}, "[quotas.default]: output: "),
        ({"default": {"output": -1}}, "[quotas.default]: output: "),
    ],
)
def test_parse_table_refuses(table: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_table(table, "f.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("f.toml: ")


def test_config_file_quotas(tmp_path: Path) -> None:
    path = tmp_path / "jobd.toml"
    path.write_text(
        "[quotas.default]\nstreams = 7\n"
        "[quotas.identity.client_1]\nrunning = 2\nstarts_per_minute = 5\noutput = \"1M\"\n"
    )
    config = Config()
    assert config.quotas == QuotaPolicy()
    config.apply_file(path)
    assert config.quotas.of("client_1") == Quota(running=2, starts_per_minute=5, streams=7,
                                                 output=1 << 20)
    assert config.quotas.of("client_2") == Quota(streams=7)


def test_config_file_bad_quota_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jobd.toml"
    path.write_text("[quotas.identity.client_1]\nrunning = \"two\"\n")
    with pytest.raises(ConfigError, match=r"jobd.toml: \[quotas.identity.client_1\]: running"):
        Config().apply_file(path)


# --- the manager's running and start-rate quotas ----------------------------------------


class CountingBackend(NoneBackend):
    def __init__(self) -> None:
        super().__init__("test")
        self.created = 0

    def create(self, name: str, limits: Limits, slice: str = "") -> Any:
        self.created += 1
        return super().create(name, limits, slice)


async def test_manager_refuses_past_the_running_quota_before_any_work(tmp_path: Path) -> None:
    backend = CountingBackend()
    quotas = QuotaPolicy(Quota(running=5), {"alice": Quota(running=1)})
    async with open_manager(tmp_path / "state", cgroups=backend, quotas=quotas) as manager:
        first = await manager.start("alice", JobSpec(("sleep", "300")))
        with pytest.raises(ResourceExhausted, match=r"^quota reached: 1 running jobs for alice$"):
            await manager.start("alice", JobSpec(("sleep", "300")))
        assert [j.id for j in (await manager.jobs()).jobs] == [first.id]
        assert [p.name for p in (tmp_path / "state" / "output").iterdir()] == [
            manager.state.log_path(first.id).name
        ]
        assert backend.created == 1
        bob = await manager.start("bob", JobSpec(("sleep", "300")))  # not affected
        assert manager.running_count("alice") == manager.running_count("bob") == 1
        await manager.stop(first, "alice", 0)
        assert manager.running_count("alice") == 0  # counted down when it ended
        second = await manager.start("alice", JobSpec(("sleep", "300")))
        for job in (bob, second):
            await manager.stop(job, "test", 0)


async def test_manager_failed_spawn_does_not_hold_a_running_slot(tmp_path: Path) -> None:
    quotas = QuotaPolicy(Quota(running=1))
    async with open_manager(tmp_path / "state", quotas=quotas) as manager:
        with pytest.raises(SpawnFailed):
            await manager.start("alice", JobSpec(("/nonexistent/program",)))
        assert manager.running_count("alice") == 0
        job = await manager.start("alice", JobSpec(("true",)))
        await manager.wait_finished(job)
        assert manager.running_count("alice") == 0


async def test_manager_start_rate_is_per_identity_and_follows_a_reload(tmp_path: Path) -> None:
    quotas = QuotaPolicy(Quota(starts_per_minute=2))
    async with open_manager(tmp_path / "state", quotas=quotas) as manager:
        for _ in range(2):
            await manager.wait_finished(await manager.start("alice", JobSpec(("true",))))
        with pytest.raises(ResourceExhausted,
                           match=r"^quota reached: 2 job starts per minute for alice$"):
            await manager.start("alice", JobSpec(("true",)))
        await manager.wait_finished(await manager.start("bob", JobSpec(("true",))))
        # As a reload does: a new policy, swapped whole.
        manager.policy.swap(replace(manager.policy.now,
                                    quotas=QuotaPolicy(Quota(starts_per_minute=3))))
        await manager.wait_finished(await manager.start("alice", JobSpec(("true",))))
