"""Limits without root: the policy (request vs defaults vs role maxima), the config tables,
and the manager and supervisor driving a fake cgroup backend."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import uuid
from pathlib import Path

import pytest
import trio
from fake_cgroups import FakeBackend, FakeCgroup
from helpers_unit import (
    config_from,
    open_manager,
    process_gone_or_zombie,
    python,
    running,
    wait_for_output,
)

from jobd.cgroups.base import CONTROLLERS
from jobd.config import ConfigError
from jobd.jobs import manager as manager_module
from jobd.jobs import supervisor
from jobd.jobs.output import OutputLog, follow
from jobd.jobs.supervisor import JobRunner
from jobd.model.errors import FailedPrecondition, InvalidArgument
from jobd.model.job import Job, JobSpec, LimitRequest, Outcome
from jobd.model.resources import Limits, Usage
from jobd.policy import limits as limits_module
from jobd.policy.auth import Role
from jobd.policy.limits import BUILTIN_DEFAULTS, LimitPolicy, parse_device, parse_table

MiB = 1 << 20
GiB = 1 << 30
ALL = frozenset(CONTROLLERS)
WAIT = "import time; print('ready', flush=True); time.sleep(120)"
IGNORE_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def effective(
    policy: LimitPolicy,
    role: Role = Role.USER,
    available: frozenset[str] = ALL,
    **request: object,
) -> Limits:
    return policy.effective(LimitRequest(**request), role, available)  # type: ignore[arg-type]


# --- LimitPolicy.effective: request vs maximum ------------------------------------------


def test_explicit_request_within_the_maximum_is_granted() -> None:
    policy = LimitPolicy(maxima={Role.USER: LimitRequest(memory=256 * MiB, cpu=1.0, pids=64)})
    limits = effective(policy, memory=256 * MiB, cpu=0.5, pids=10)
    assert (limits.memory, limits.cpu, limits.pids) == (256 * MiB, 0.5, 10)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"memory": 257 * MiB},
            "memory limit 257 MiB is above the maximum for the user role (256 MiB)",
        ),
        ({"cpu": 1.5}, "cpu limit 1.5 CPU is above the maximum for the user role (1 CPU)"),
        ({"pids": 65}, "pids limit 65 tasks is above the maximum for the user role (64 tasks)"),
        (
            {"io_read_bps": 11 * MiB, "io_device": "8:0"},
            "io_read_bps limit 11 MiB/s is above the maximum for the user role (10 MiB/s)",
        ),
        (
            {"io_write_bps": 6 * MiB, "io_device": "8:0"},
            "io_write_bps limit 6 MiB/s is above the maximum for the user role (5 MiB/s)",
        ),
    ],
)
def test_explicit_request_above_the_maximum_is_invalid(
    request_: dict[str, object], message: str
) -> None:
    cap = LimitRequest(memory=256 * MiB, cpu=1.0, pids=64, io_read_bps=10 * MiB,
                       io_write_bps=5 * MiB)  # fmt: skip
    policy = LimitPolicy(maxima={Role.USER: cap})
    with pytest.raises(InvalidArgument) as info:
        effective(policy, **request_)
    assert str(info.value) == message


def test_the_maximum_is_per_role() -> None:
    policy = LimitPolicy(maxima={Role.USER: LimitRequest(memory=256 * MiB)})
    with pytest.raises(InvalidArgument, match="memory"):
        effective(policy, Role.USER, memory=GiB)
    assert effective(policy, Role.ADMIN, memory=GiB).memory == GiB


@pytest.fixture(autouse=True)
def any_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Device numbers in these tests need not exist here: only the policy is under test."""
    monkeypatch.setattr(limits_module, "whole_disk", lambda major, minor: (major, minor))


def test_an_unknown_device_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    with pytest.raises(InvalidArgument, match="4095:4095 is not a block device"):
        parse_device("4095:4095")


def test_a_tiny_cpu_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"cpu limit must be at least 0\.01"):
        effective(LimitPolicy(), cpu=0.005)


def test_io_defaults_on_a_device_that_is_not_a_disk_fail_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()
    policy = LimitPolicy(LimitRequest(io_read_bps=MiB), default_io_device="/proc")
    with pytest.raises(ValueError, match=r"\[limits.default\]: io_device '/proc'"):
        policy.validate()
    LimitPolicy(LimitRequest(pids=5), default_io_device="/proc").validate()  # no io: fine


# --- defaults ---------------------------------------------------------------------------


def test_builtin_default_is_a_task_limit_only() -> None:
    assert effective(LimitPolicy()) == Limits(pids=4096)
    assert LimitRequest(pids=4096) == BUILTIN_DEFAULTS


def test_defaults_apply_when_nothing_is_asked() -> None:
    defaults = LimitRequest(cpu=1.0, memory=GiB, io_read_bps=100 * MiB, io_write_bps=50 * MiB,
                            io_device="8:16", pids=100)  # fmt: skip
    limits = effective(LimitPolicy(defaults))
    assert limits == Limits(cpu=1.0, memory=GiB, io_read_bps=100 * MiB, io_write_bps=50 * MiB,
                            io_device=(8, 16), pids=100)  # fmt: skip


def test_an_explicit_request_replaces_the_default() -> None:
    limits = effective(LimitPolicy(LimitRequest(memory=GiB, pids=100)), memory=10 * MiB)
    assert (limits.memory, limits.pids) == (10 * MiB, 100)


def test_a_request_may_exceed_the_default_up_to_the_maximum() -> None:
    policy = LimitPolicy(LimitRequest(memory=GiB), {Role.USER: LimitRequest(memory=4 * GiB)})
    assert effective(policy, memory=2 * GiB).memory == 2 * GiB


def test_a_default_is_capped_by_the_maximum() -> None:
    policy = LimitPolicy(
        LimitRequest(memory=4 * GiB, pids=4096, cpu=2.0),
        {Role.USER: LimitRequest(memory=GiB, pids=64)},
    )
    user = effective(policy, Role.USER)
    assert (user.memory, user.pids, user.cpu) == (GiB, 64, 2.0)
    admin = effective(policy, Role.ADMIN)
    assert (admin.memory, admin.pids, admin.cpu) == (4 * GiB, 4096, 2.0)


def test_the_maximum_applies_without_a_default_or_a_request() -> None:
    policy = LimitPolicy(LimitRequest(), {Role.USER: LimitRequest(memory=GiB, cpu=0.5)})
    limits = effective(policy, Role.USER)
    assert (limits.memory, limits.cpu, limits.pids) == (GiB, 0.5, None)
    assert effective(policy, Role.ADMIN) == Limits()


def test_defaults_for_unavailable_controllers_are_dropped() -> None:
    defaults = LimitRequest(cpu=1.0, memory=GiB, io_read_bps=MiB, pids=100)
    policy = LimitPolicy(defaults, {Role.USER: LimitRequest(memory=GiB // 2)})
    limits = effective(policy, available=frozenset({"cpu", "kill"}))
    assert limits == Limits(cpu=1.0)
    # No io controller: the default io limit is dropped, so no device is needed either.
    assert effective(LimitPolicy(LimitRequest(io_read_bps=MiB)), available=frozenset()) == Limits()


def test_an_explicit_request_for_an_unavailable_controller_is_kept() -> None:
    # The backend refuses it with FAILED_PRECONDITION later; the policy must not drop it.
    limits = effective(LimitPolicy(), available=frozenset(), memory=MiB)
    assert limits.memory == MiB


# --- io device --------------------------------------------------------------------------


def test_io_device_as_major_minor() -> None:
    limits = effective(LimitPolicy(), io_read_bps=MiB, io_device="259:3")
    assert (limits.io_read_bps, limits.io_device) == (MiB, (259, 3))
    assert parse_device(" 8:0 ") == (8, 0)


def test_io_device_as_a_path_the_configuration_names_its_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def fake_block_device(path: str) -> tuple[int, int]:
        asked.append(path)
        return (8, 0)

    monkeypatch.setattr(limits_module, "block_device", fake_block_device)
    policy = LimitPolicy(io_devices=(str(tmp_path),), default_io_device="/var/lib/jobd")
    limits = effective(policy, io_write_bps=MiB, io_device=str(tmp_path))
    assert limits.io_device == (8, 0)
    assert effective(policy, io_write_bps=MiB, io_device="/var/lib/jobd").io_device == (8, 0)
    assert asked == [str(tmp_path), "/var/lib/jobd"]


@pytest.mark.parametrize("path", ["/root/.bashrc", "/root/no-such-file", "/dev/sda", "8:0x"])
def test_any_other_path_is_refused_alike_and_never_looked_at(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(path: str) -> tuple[int, int]:
        raise AssertionError(f"the daemon looked at {path!r}")

    monkeypatch.setattr(limits_module, "block_device", never)
    policy = LimitPolicy(io_devices=("/srv",), default_io_device="/var/lib/jobd")
    with pytest.raises(InvalidArgument) as info:
        effective(policy, io_read_bps=MiB, io_device=path)
    assert str(info.value) == (f"io_device {path!r}: not a device this server names: give "
                               "MAJOR:MINOR, or one of '/srv', '/var/lib/jobd'")


def test_io_device_as_a_real_path(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    entry = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not entry.exists():
        pytest.skip(f"{tmp_path} is not on a block device")
    major, minor = parse_device(str(tmp_path))  # a path of the configuration's own
    assert Path(f"/sys/dev/block/{major}:{minor}").exists()
    assert not Path(f"/sys/dev/block/{major}:{minor}/partition").exists()  # a whole disk


def test_io_device_defaults() -> None:
    # The daemon's default device (the state directory's disk) ...
    policy = LimitPolicy(default_io_device="8:16")
    assert effective(policy, io_read_bps=MiB).io_device == (8, 16)
    # ... unless the configured defaults name one ...
    policy = LimitPolicy(LimitRequest(io_device="8:32"), default_io_device="8:16")
    assert effective(policy, io_read_bps=MiB).io_device == (8, 32)
    # ... unless the request does.
    assert effective(policy, io_read_bps=MiB, io_device="8:48").io_device == (8, 48)
    # No io limit, no device, whatever is configured.
    assert effective(policy).io_device is None


def test_an_io_limit_without_any_device_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="an io limit needs io_device"):
        effective(LimitPolicy(), io_read_bps=MiB)
    with pytest.raises(InvalidArgument, match="an io limit needs io_device"):
        effective(LimitPolicy(LimitRequest(io_write_bps=MiB)))


def test_a_named_io_device_path_that_is_gone_is_invalid(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")  # named by the configuration, then removed
    with pytest.raises(InvalidArgument) as info:
        effective(LimitPolicy(io_devices=(missing,)), io_read_bps=MiB, io_device=missing)
    assert str(info.value) == f"io_device {missing!r}: no such file or device"


# --- non-positive values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cpu", 0.0),
        ("cpu", -0.5),
        ("cpu", math.nan),
        ("memory", 0),
        ("memory", -1),
        ("pids", 0),
        ("io_read_bps", 0),
        ("io_write_bps", -5),
    ],
)
def test_non_positive_requests_are_invalid(name: str, value: float) -> None:
    with pytest.raises(InvalidArgument) as info:
        effective(LimitPolicy(), **{name: value, "io_device": "8:0"})
    least = "at least 0.01" if name == "cpu" else "more than 0"
    assert str(info.value) == f"{name} limit must be {least}"


def test_an_infinite_cpu_request_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="cpu limit must be at most 4096"):
        effective(LimitPolicy(), cpu=math.inf)


# --- parse_table ------------------------------------------------------------------------


def test_parse_table_good() -> None:
    table = {"cpu": 0.5, "memory": "1G", "io_read_bps": "10M", "io_write_bps": 1048576,
             "io_device": "8:0", "pids": 64}  # fmt: skip
    assert parse_table(table, "here") == LimitRequest(
        cpu=0.5, memory=GiB, io_read_bps=10 * MiB, io_write_bps=MiB, io_device="8:0", pids=64
    )
    assert parse_table({"cpu": "50%"}, "here").cpu == 0.5
    assert parse_table({"cpu": "250m"}, "here").cpu == 0.25
    assert parse_table({"cpu": 2}, "here").cpu == 2.0
    assert parse_table({"memory": "512KiB"}, "here").memory == 512 << 10
    assert parse_table({}, "here") == LimitRequest()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"memroy": "1G"}, "here: unknown limit(s) memroy"),
        ({"b": 1, "a": 2, "pids": 3}, "here: unknown limit(s) a, b"),
        ({"pids": "64"}, "here: pids: pids must be a positive whole number, not '64'"),
        ({"pids": 0}, "here: pids: pids must be a positive whole number, not 0"),
        ({"pids": -3}, "here: pids: pids must be a positive whole number, not -3"),
        ({"pids": True}, "here: pids: pids must be a positive whole number, not True"),
        ({"pids": 1.5}, "here: pids: pids must be a positive whole number, not 1.5"),
        ({"memory": "lots"}, "here: memory: invalid size 'lots'"),
        ({"memory": -1}, "here: memory: invalid size '-1'"),
        ({"io_read_bps": "1.5"}, "here: io_read_bps: invalid size '1.5': not a whole number"),
        ({"cpu": 0}, "here: cpu: invalid CPU limit '0': must be more than zero"),
        ({"cpu": "fast"}, "here: cpu: invalid CPU limit 'fast'"),
        ({"cpu": "-1"}, "here: cpu: invalid CPU limit '-1': must be more than zero"),
    ],
)
def test_parse_table_bad(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_table(table, "here")
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("name", ["memory", "io_read_bps", "io_write_bps"])
def test_parse_table_refuses_a_zero_size(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        parse_table({name: "0"}, "here")


# --- config.py ---------------------------------------------------------------------------


def test_config_limits_tables(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        '[limits.default]\ncpu = "50%"\nmemory = "1G"\nio_read_bps = "100M"\n'
        'io_device = "8:0"\n\n'
        '[limits.max.user]\nmemory = "4G"\npids = 64\n\n'
        "[limits.max.admin]\ncpu = 4\n",
    )
    # Keys not given keep the built-in default (the task limit).
    assert config.limit_defaults == LimitRequest(
        cpu=0.5, memory=GiB, io_read_bps=100 * MiB, io_device="8:0", pids=4096
    )
    assert config.limit_maxima == {
        Role.USER: LimitRequest(memory=4 * GiB, pids=64),
        Role.ADMIN: LimitRequest(cpu=4.0),
    }


def test_config_without_limits_has_the_builtin_defaults(tmp_path: Path) -> None:
    config = config_from(tmp_path, "grace = 5\n")
    assert config.limit_defaults == BUILTIN_DEFAULTS
    assert config.limit_maxima == {}


def test_config_default_may_override_the_builtin_task_limit(tmp_path: Path) -> None:
    config = config_from(tmp_path, "[limits.default]\npids = 100\n")
    assert config.limit_defaults == LimitRequest(pids=100)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[limits.max.root]\nmemory = "1G"\n', "[limits.max.root]: no such role"),
        ('[limits.max.Admin]\nmemory = "1G"\n', "[limits.max.Admin]: no such role"),
        ('[limits.default]\nmemroy = "1G"\n', "[limits.default]: unknown limit(s) memroy"),
        ("[limits.max.user]\nswap = 1\n", "[limits.max.user]: unknown limit(s) swap"),
        ('[limits.default]\nmemory = "big"\n', "[limits.default]: memory: invalid size 'big'"),
        ("[limits.max.user]\npids = 0\n", "[limits.max.user]: pids: pids must be a positive"),
        ("[limits.maximum.user]\npids = 1\n", "[limits] holds only io_devices, [limits.default]"),
        ("limits = 3\n", "[limits] holds only io_devices, [limits.default]"),
        ("[limits]\ndefault = 3\n", "[limits.default] must be a table"),
        ("[limits]\nmax = 3\n", "[limits.max] must be a table"),
        ("[limits.max]\nuser = 3\n", "[limits.max.user] must be a table"),
    ],
)
def test_config_limits_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'jobd.toml'}: {message}"), str(info.value)


# --- JobManager with a fake backend -----------------------------------------------------


NO_MEMORY = CONTROLLERS - {"memory"}


async def test_start_asking_for_an_unavailable_limit_fails_and_records_nothing(
    tmp_path: Path,
) -> None:
    backend = FakeBackend(tmp_path / "cg", NO_MEMORY)
    async with open_manager(tmp_path / "state", cgroups=backend) as manager:
        spec = JobSpec(("true",), limits=LimitRequest(memory=100 * MiB))
        with pytest.raises(FailedPrecondition) as info:
            await manager.start("alice", spec)
        assert "memory" in str(info.value)
        assert str(info.value).startswith("cannot apply the memory limit")
        assert (await manager.jobs()).jobs == []
        assert manager.running() == []
        assert list((tmp_path / "state" / "output").iterdir()) == []
        assert backend.groups == {}


async def test_a_default_for_an_unavailable_controller_is_silently_dropped(
    tmp_path: Path,
) -> None:
    backend = FakeBackend(tmp_path / "cg", NO_MEMORY)
    policy = LimitPolicy(LimitRequest(memory=GiB, pids=50))
    async with open_manager(tmp_path / "state", cgroups=backend, limits=policy) as manager:
        job = await manager.start("alice", JobSpec(("true",)))
        assert job.limits == Limits(pids=50)
        group = backend.groups[f"job-{job.id}"]
        assert group.limits == Limits(pids=50)
        finished = await manager.wait_finished(job)
        assert finished.result is not None and finished.result.outcome is Outcome.EXITED
        assert group.removed


async def test_limits_above_the_role_maximum_record_nothing(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path / "cg")
    policy = LimitPolicy(maxima={Role.USER: LimitRequest(memory=256 * MiB)})
    async with open_manager(tmp_path / "state", cgroups=backend, limits=policy) as manager:
        spec = JobSpec(("true",), limits=LimitRequest(memory=GiB))
        with pytest.raises(InvalidArgument, match="memory limit 1 GiB is above the maximum"):
            await manager.start("alice", spec, Role.USER)
        assert (await manager.jobs()).jobs == []
        assert list((tmp_path / "state" / "output").iterdir()) == []
        assert backend.groups == {}
        job = await manager.start("root", spec, Role.ADMIN)
        assert job.limits.memory == GiB
        await manager.wait_finished(job)


async def test_leftover_groups_are_killed_and_removed_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend(tmp_path / "cg")
    busy = backend.add_leftover("job-old-1")
    idle = backend.add_leftover("job-old-2", populated=False)
    caplog.set_level(logging.WARNING, logger="jobd.jobs.manager")
    async with open_manager(tmp_path / "state", cgroups=backend):
        assert (busy.kills, busy.removed, busy.populated) == (1, True, False)
        assert (idle.kills, idle.removed) == (1, True)
        assert backend.leftovers() == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("reaped cgroup job-old-1, left by a jobd that died" in m for m in messages)
    assert backend.parent_removed


async def test_a_leftover_that_cannot_be_emptied_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "LEFTOVER_TIMEOUT", 0.2)
    backend = FakeBackend(tmp_path / "cg", empty_on_kill=False)
    stuck = backend.add_leftover("job-stuck")
    caplog.set_level(logging.ERROR, logger="jobd.jobs.manager")
    async with open_manager(tmp_path / "state", cgroups=backend) as manager:
        assert stuck.kills == 1 and not stuck.removed
        job = await manager.start("alice", JobSpec(("true",)))
        await manager.wait_finished(job)
        stuck.set_empty()  # so the fake lets the last clean-up through
    assert any("cannot remove leftover cgroup job-stuck" in r.getMessage() for r in caplog.records)


# --- the supervisor with a fake backend -------------------------------------------------


def make_runner(
    tmp_path: Path, argv: list[str], group: FakeCgroup, limits: Limits | None = None,
    grace: float = 30.0,
) -> JobRunner:  # fmt: skip
    job = Job(id=str(uuid.uuid4()), owner="alice", spec=JobSpec(tuple(argv)),
              limits=limits or Limits())  # fmt: skip
    output = OutputLog(tmp_path / f"{job.id}.log")
    return JobRunner(job, output, grace, group)


def killing_the_process_group(group: FakeCgroup, runner: JobRunner, calls: list[bool]) -> None:
    """Make the fake group's kill() act like cgroup.kill on the job's processes, recording
    for each call whether the job's main process was still alive then."""
    fake_kill = group.kill

    def kill() -> None:
        pid = runner.job.pid
        alive = pid is not None and not process_gone_or_zombie(pid)
        calls.append(alive)
        if alive:
            assert pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        fake_kill()

    group.kill = kill  # type: ignore[method-assign]


async def test_the_shim_writes_the_job_pid_into_every_procs_file(
    each_shim: str, tmp_path: Path
) -> None:
    backend = FakeBackend(tmp_path / "cg")
    group = backend.create("job-shim", Limits())
    # Two more hierarchies, as on cgroup v1.
    for extra in ("memory", "pids"):
        (tmp_path / "cg" / extra).mkdir()
        (tmp_path / "cg" / extra / "cgroup.procs").touch()
        group.procs_files.append(tmp_path / "cg" / extra / "cgroup.procs")
    runner = make_runner(tmp_path, python(WAIT), group)
    async with running(runner):
        await wait_for_output(follow(runner.output.log.path, runner.output), b"ready")
        pid = runner.job.pid
        assert pid is not None
        # The shim exec'd the command: the pid it wrote is the job's main process.
        assert [f.read_text() for f in group.procs_files] == [f"{pid}\n"] * 3
        cmdline = (await trio.Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")
        assert [a.decode() for a in cmdline[:2]] == python(WAIT)[:2]
        assert not group.removed
        runner.request_stop("alice", 5)
        await runner.done.wait()
    assert group.removed


async def test_a_procs_file_that_cannot_be_written_fails_the_job(
    each_shim: str, tmp_path: Path
) -> None:
    backend = FakeBackend(tmp_path / "cg")
    group = backend.create("job-noprocs", Limits())
    group.procs_files.append(tmp_path / "missing-dir" / "cgroup.procs")
    runner = make_runner(tmp_path, ["sh", "-c", "echo ran"], group)
    async with running(runner):
        await runner.done.wait()
    result = runner.job.result
    assert result is not None
    if each_shim == "compiled":  # the launcher says why
        assert result.outcome is Outcome.FAILED_TO_START
        assert result.message.startswith("cannot join the job's cgroup ")
    else:
        assert result.exit_code == 125, result  # never ran the command
    assert b"ran" not in (tmp_path / f"{runner.job.id}.log").read_bytes()
    assert group.removed


async def test_stop_after_the_grace_kills_the_group(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path / "cg")
    group = backend.create("job-stop", Limits())
    runner = make_runner(tmp_path, python(IGNORE_TERM), group)
    calls: list[bool] = []
    killing_the_process_group(group, runner, calls)
    async with running(runner):
        await wait_for_output(follow(runner.output.log.path, runner.output), b"ready")
        begin = trio.current_time()
        runner.request_stop("alice", 0.3)
        await runner.done.wait()
        assert trio.current_time() - begin >= 0.3
    # The first kill() came while the job ignored SIGTERM: the escalation, not the clean-up.
    assert calls and calls[0] is True, calls
    result = runner.job.result
    assert result is not None
    assert (result.outcome, result.signal) == (Outcome.STOPPED, signal.SIGKILL)
    assert group.removed


async def test_an_oom_kill_kills_the_job_and_says_so(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path / "cg")
    limits = Limits(memory=100 * MiB)
    group = backend.create("job-oom", limits)
    runner = make_runner(tmp_path, python(WAIT), group, limits)
    calls: list[bool] = []
    killing_the_process_group(group, runner, calls)
    async with running(runner):
        await wait_for_output(follow(runner.output.log.path, runner.output), b"ready")
        group.memory_peak = 100 * MiB
        group.trigger_oom()  # the kernel killed nothing yet (v1 kills the largest task only)
        await runner.done.wait()
    assert calls and calls[0] is True, calls  # the supervisor killed the rest
    job = runner.job
    assert job.result is not None
    assert job.result.outcome is Outcome.OOM_KILLED
    assert job.result.message == "killed: out of memory (limit 100 MiB)"
    assert job.result.signal == signal.SIGKILL
    assert job.usage == Usage(0.0, 100 * MiB, 1, 0)
    assert group.removed


async def test_an_oom_kill_without_a_memory_limit_names_no_limit(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path / "cg")
    group = backend.create("job-oom2", Limits())
    group.oom_kills = 1  # the kernel killed a task; the main process exits by itself
    runner = make_runner(tmp_path, ["true"], group)
    async with running(runner):
        await runner.done.wait()
    assert runner.job.result is not None
    assert runner.job.result.message == "killed: out of memory"


async def test_usage_is_read_while_running_and_at_the_end(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path / "cg")
    group = backend.create("job-usage", Limits(pids=5))
    runner = make_runner(tmp_path, python(WAIT), group)
    async with running(runner):
        await wait_for_output(follow(runner.output.log.path, runner.output), b"ready")
        group.cpu_seconds, group.pids_limit_hits = 1.5, 3
        runner.refresh_usage()
        assert runner.job.usage == Usage(1.5, 0, 0, 3)
        group.cpu_seconds = 2.5
        runner.request_stop("alice", 5)
        await runner.done.wait()
    assert runner.job.usage == Usage(2.5, 0, 0, 3)
    group.cpu_seconds = 99.0
    runner.refresh_usage()  # a finished job's usage is final
    assert runner.job.usage.cpu_seconds == 2.5


async def test_the_group_is_removed_after_a_failed_spawn(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path / "cg")
    group = backend.create("job-nospawn", Limits())
    runner = make_runner(tmp_path, ["/nonexistent/prog"], group)
    async with running(runner):
        await runner.done.wait()
    assert runner.job.result is not None
    assert runner.job.result.outcome is Outcome.FAILED_TO_START
    assert group.removed


async def test_a_group_that_stays_populated_is_logged_and_not_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "EMPTY_TIMEOUT", 0.2)
    backend = FakeBackend(tmp_path / "cg", empty_on_kill=False)
    group = backend.create("job-stuck", Limits())
    group.populate()
    runner = make_runner(tmp_path, ["true"], group)
    caplog.set_level(logging.ERROR, logger="jobd.jobs.supervisor")
    async with running(runner):
        await runner.done.wait()
    assert runner.job.result is not None and runner.job.result.exit_code == 0
    assert not group.removed
    messages = [r.getMessage() for r in caplog.records]
    assert any("processes left in cgroup after SIGKILL" in m for m in messages), messages
    assert any("cannot remove its cgroup" in m for m in messages), messages


def test_huge_values_are_refused_or_exact() -> None:
    from jobd.model.units import parse_size

    assert parse_size("9007199254740993") == 9007199254740993  # no float rounding
    with pytest.raises(ValueError, match="at most"):
        parse_table({"memory": "16777216T"}, "test")
    with pytest.raises(ValueError, match="at most"):
        parse_table({"pids": 5_000_000_000}, "test")
    with pytest.raises(InvalidArgument, match="pids limit must be at most"):
        effective(LimitPolicy(), pids=2**40)


async def test_the_next_jobs_group_is_made_ahead_and_none_is_left(tmp_path: Path) -> None:
    """After a start the manager makes the next job's group (jobd.cgroups.spare): the next
    start with the same limits uses it; at the end nothing is left."""
    backend = FakeBackend(tmp_path / "cg")
    async with open_manager(tmp_path / "state", cgroups=backend) as manager:
        first = await manager.start("alice", JobSpec(("true",)))
        await manager.wait_finished(first)
        await manager.spares.wait_idle()
        made_ahead = set(backend.groups) - {f"job-{first.id}"}
        assert len(made_ahead) == 1
        second = await manager.start("alice", JobSpec(("true",)))
        assert {f"job-{second.id}"} == made_ahead
        assert backend.groups[f"job-{second.id}"].limits == second.limits
        await manager.wait_finished(second)
    assert all(group.removed for group in backend.groups.values())
    assert backend.parent_removed


async def test_each_job_goes_in_its_owners_slice_and_a_spare_only_to_the_same_owner(
    tmp_path: Path,
) -> None:
    backend = FakeBackend(tmp_path / "cg")
    async with open_manager(tmp_path / "state", cgroups=backend) as manager:
        first = await manager.wait_finished(await manager.start("alice", JobSpec(("true",))))
        await manager.spares.wait_idle()
        (spare,) = set(backend.groups) - {f"job-{first.id}"}
        assert backend.slice_of[spare] == "u-alice"
        # Bob's job is made in bob's slice, never in alice's spare.
        bob = await manager.wait_finished(await manager.start("bob", JobSpec(("true",))))
        assert f"job-{bob.id}" != spare
        assert backend.slice_of[f"job-{first.id}"] == "u-alice"
        assert backend.slice_of[f"job-{bob.id}"] == "u-bob"
