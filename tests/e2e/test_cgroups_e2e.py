"""End to end with real cgroups: a real jobd as root, its jobs' groups, limits and usage.

Each test starts its own daemon(s) through the ``env`` fixture, which afterwards stops them
and then checks, as ``find /sys/fs/cgroup -name job-<id>`` would, that no group of the
test's jobs is left anywhere and that the daemon's parent group is gone; whatever it finds is
killed and removed before the test fails, so no test leaves processes or groups behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpclib import Status

from harness import (
    Certs,
    Daemon,
    collect,
    expect_status,
    python,
    read_until,
    start,
    stop,
    wait_until,
)
from jobd.cgroups import block_device, detect
from jobd.cgroups.mounts import find_hierarchies, parse_mountinfo, parse_proc_cgroup
from jobd.config import cgroup_parent_for
from jobd.v1 import jobs_pb2 as pb

pytestmark = [pytest.mark.e2e, pytest.mark.cgroups]

MiB = 1 << 20


PROBE = f"jobd-e2e-probe-{secrets.token_hex(4)}"


def _probe() -> tuple[str, frozenset[str]]:
    """The backend jobd would choose here (with a throwaway parent), or skip the module."""
    if os.geteuid() != 0:
        pytest.skip("needs root and cgroups: not running as root", allow_module_level=True)
    backend = detect(PROBE)
    try:
        if backend.name == "none":
            reason = getattr(backend, "reason", "no usable cgroup hierarchy")
            pytest.skip(f"needs root and cgroups: {reason}", allow_module_level=True)
        return backend.name, frozenset(backend.controllers)
    finally:
        backend.remove_parent()


BACKEND, CONTROLLERS = _probe()


def _read(path: str | Path) -> str:
    with open(path) as f:
        return f.read()


def own_hierarchies() -> list[Any]:
    """Every hierarchy `jobd --check` lists: v1 ones with a controller jobd uses, cgroup2."""
    found, _ = find_hierarchies(_read("/proc/self/mountinfo"), _read("/proc/self/cgroup"))
    return found


def job_hierarchies(parent: str) -> list[Any]:
    """Those a job without an I/O limit is put in: not blkio (used for I/O limits only), not
    cpuacct where the unified hierarchy counts CPU time, and not the freezer where it has
    cgroup.kill (``parent``: the daemon's)."""
    found = own_hierarchies()
    unified = [h for h in found if h.version == 2]
    kill = any((h.current / parent / "cgroup.kill").exists() for h in unified)
    unneeded = {"blkio"} | ({"freezer"} if kill else set()) | ({"cpuacct"} if unified else set())
    return [h for h in found if h.version == 2 or not h.controllers <= unneeded]


def cgroup_mounts() -> list[Path]:
    mounts = parse_mountinfo(_read("/proc/self/mountinfo"))
    return sorted({Path("/sys/fs/cgroup"), *(m.mount_point for m in mounts)})


def dirs_named(*names: str) -> list[Path]:
    """Directories with one of these names anywhere under the cgroup file systems."""
    wanted, found = set(names), []
    for mount in cgroup_mounts():
        for root, dirs, _ in os.walk(mount):
            found.extend(Path(root, d) for d in dirs if d in wanted)
    return sorted(set(found))


def job_file(job_id: str, name: str) -> str | None:
    """A control file of the job's group, from whichever hierarchy has it."""
    for directory in dirs_named(f"job-{job_id}"):
        if (directory / name).exists():
            return (directory / name).read_text().strip()
    return None


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str
    state: str
    session: int
    start: str  # start time in clock ticks: tells a reused PID apart

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def proc_info(pid: int) -> Proc | None:
    try:
        stat = _read(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return Proc(pid, comm, fields[0], int(fields[3]), fields[19])


def still_running(proc: Proc) -> bool:
    now = proc_info(proc.pid)
    return now is not None and now.start == proc.start and now.alive


def processes_in_cgroups(*needles: str) -> list[Proc]:
    """Live processes whose /proc/PID/cgroup mentions one of ``needles`` (a group name)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            membership = _read(f"/proc/{entry}/cgroup")
        except OSError:
            continue
        if any(f"/{n}/" in membership or membership_ends(membership, n) for n in needles):
            info = proc_info(int(entry))
            if info is not None and info.alive:
                found.append(info)
    return found


def membership_ends(membership: str, name: str) -> bool:
    return any(line.endswith(f"/{name}") for line in membership.splitlines())


def tasks(procs: list[Proc]) -> int:
    """Processes and threads: what the pids controller counts."""
    count = 0
    for p in procs:
        with contextlib.suppress(FileNotFoundError):
            count += len(os.listdir(f"/proc/{p.pid}/task"))
    return count


async def get(stub: Any, job_id: str) -> Any:
    return await stub.GetJob(pb.GetJobRequest(job_id=job_id))


# --- the environment: daemons, the jobs they ran, and the check that nothing is left -------


@dataclass
class Env:
    certs: Certs
    state: Path
    parent: str
    daemons: list[Daemon] = field(default_factory=list)
    crashed: list[Daemon] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)

    def daemon(self, config_extra: str = "") -> Daemon:
        d = Daemon(self.certs, self.state, config_extra=config_extra)
        self.daemons.append(d)
        return d.start()

    def crash(self, d: Daemon) -> None:
        """SIGKILL ``d``, as a power cut would: it gets no chance to clean up."""
        self.crashed.append(d)
        d.signal(signal.SIGKILL)
        assert d.proc is not None
        d.proc.wait(30)

    async def start(self, stub: Any, argv: list[str], **kw: Any) -> str:
        job_id = await start(stub, argv, **kw)
        self.jobs.append(job_id)
        return job_id


def _clean_up(names: list[str]) -> list[str]:
    """Kill every process in the named groups and remove them; say what was found."""
    found = [f"process {p.pid} ({p.comm}) in {names}" for p in processes_in_cgroups(*names)]
    for directory in dirs_named(*names):
        unified = directory / "cgroup.kill"
        if unified.exists():
            with contextlib.suppress(OSError), open(unified, "w") as f:
                f.write("1")
        for root, _, _ in os.walk(directory):
            with contextlib.suppress(OSError):
                for pid in _read(Path(root, "cgroup.procs")).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    for p in processes_in_cgroups(*names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    wait_until(lambda: not processes_in_cgroups(*names), 20)
    for directory in dirs_named(*names):
        found.append(f"cgroup {directory}")
        for root, _, _ in sorted(os.walk(directory), key=lambda w: -len(w[0])):
            try:
                os.rmdir(root)
            except OSError as exc:
                found.append(f"  cannot remove {root}: {exc}")
    return found


@pytest.fixture
def env(certs: Certs, tmp_path: Path) -> Iterator[Env]:
    state = tmp_path / "state"
    e = Env(certs, state, cgroup_parent_for(state))
    try:
        yield e
    finally:
        problems: list[str] = []
        clean_exit = False
        for d in e.daemons:
            try:
                code = d.stop()
            except Exception as exc:  # a hung daemon: killed by stop() itself
                problems.append(f"jobd did not stop: {exc!r}")
                continue
            if d in e.crashed:
                continue
            clean_exit = code == 0
            if code != 0:
                problems.append(f"jobd exited with {code}:\n" + "\n".join(d.log))
            if any("Traceback" in line for line in d.log):
                problems.append("traceback in jobd's log:\n" + "\n".join(d.log))
        jobs_left = _clean_up([f"job-{j}" for j in e.jobs])
        parent_left = _clean_up([e.parent])
        problems += [f"left behind: {what}" for what in jobs_left]
        if clean_exit:
            problems += [f"left behind after a clean shutdown: {what}" for what in parent_left]
    assert not problems, "\n".join(problems)


# --- containment ----------------------------------------------------------------------------


def test_job_is_in_its_own_group_in_every_hierarchy_from_its_first_instruction(env: Env) -> None:
    daemon = env.daemon()

    async def scenario(stub: Any) -> tuple[str, bytes, Any]:
        job_id = await env.start(stub, ["cat", "/proc/self/cgroup"])
        out, _, final, _ = await collect(stub, job_id)
        return job_id, out, final

    job_id, out, final = daemon.run("client_0", scenario)
    assert final.result.exit_code == 0, final
    lines = parse_proc_cgroup(out.decode())
    # In the caller's slice, below jobd's parent group.
    suffix = f"/{env.parent}/u-client_0/job-{job_id}"
    hierarchies = job_hierarchies(env.parent)
    assert hierarchies
    checked: set[str] = set()
    for h in hierarchies:
        if h.version == 2:
            line = next(m for m in lines if m.hierarchy_id == 0 and not m.controllers)
            checked.add("unified")
        else:
            line = next(m for m in lines if m.controllers == h.controllers)
            checked |= h.controllers
        assert line.path.endswith(suffix), f"{h.label}: {line.path} (job output:\n{out.decode()})"
    # Every controller jobd says it offers is among the hierarchies checked (cpu, memory,
    # pids and the unified "0::" line on this machine; blkio and the freezer only where the
    # job needs them: see job_hierarchies, and test_cgroups.py for the job with an I/O limit).
    needed = {"cpu": "cpu", "memory": "memory", "pids": "pids"} if BACKEND == "v1" else {}
    for offered, hierarchy in needed.items():
        if offered in CONTROLLERS:
            assert hierarchy in checked, (offered, sorted(checked))
    if BACKEND == "v1" and any(h.version == 2 for h in hierarchies):
        assert "unified" in checked


@pytest.mark.parametrize("ignore_term", [False, True], ids=["plain", "ignoring-SIGTERM"])
def test_stop_kills_setsid_and_background_descendants(env: Env, ignore_term: bool) -> None:
    daemon = env.daemon()
    script = "setsid sleep 300 & sleep 300 & echo ready; wait"
    if ignore_term:
        script = "trap '' TERM; " + script  # inherited: SIGKILL after the grace takes all

    async def scenario(stub: Any) -> None:
        job_id = await env.start(stub, ["sh", "-c", script])
        await read_until(stub, job_id, b"ready")
        job = f"job-{job_id}"

        def three() -> bool:
            procs = processes_in_cgroups(job)
            return sorted(p.comm for p in procs) == ["sh", "sleep", "sleep"]

        # (the shell has printed "ready"; the sleeps may still be exec'ing)
        assert wait_until(three), processes_in_cgroups(job)
        procs = processes_in_cgroups(job)
        (shell,) = [p for p in procs if p.comm == "sh"]
        sleeps = [p for p in procs if p.comm == "sleep"]
        # One sleep really left the job's session: only the cgroup still holds it.
        assert sorted(p.session == shell.session for p in sleeps) == [False, True], procs

        final = await stop(stub, job_id, grace_ms=1000)
        assert final.state == pb.JOB_STATE_FINISHED
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED
        expected = signal.SIGKILL if ignore_term else signal.SIGTERM
        assert final.result.signal == expected, final.result
        # StopJob answers once the job has ended: every process of the group is gone now.
        survivors = [p for p in procs if still_running(p)]
        assert survivors == [], survivors
        assert processes_in_cgroups(job) == []

    daemon.run("client_0", scenario)


# The handler writes with os.write: a print() there is a reentrant call into stdout's buffer
# when the signal lands while print("ready") is still returning (seen under User-Mode Linux).
TERM_HANDLER = """
import os, signal, time
def term(*_):
    os.write(1, b"descendant got SIGTERM\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_stop_sends_sigterm_to_descendants_outside_the_process_group(env: Env) -> None:
    daemon = env.daemon()
    # The main process ignores SIGTERM and waits; its child left the session and handles it.
    script = 'trap "" TERM; setsid "$0" -c "$1" & wait'

    async def scenario(stub: Any) -> None:
        job_id = await env.start(stub, ["sh", "-c", script, sys.executable, TERM_HANDLER])
        await read_until(stub, job_id, b"ready")
        final = await stop(stub, job_id, grace_ms=2000)
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED
        out, _, _, _ = await collect(stub, job_id)
        assert b"descendant got SIGTERM" in out, out

    daemon.run("client_0", scenario)


def test_shutdown_kills_every_job_and_removes_every_group(env: Env) -> None:
    daemon = env.daemon()

    async def scenario(stub: Any) -> list[str]:
        detached = await env.start(stub, ["sh", "-c", "setsid sleep 300 & echo ready; wait"])
        plain = await env.start(stub, ["sleep", "300"])
        await read_until(stub, detached, b"ready")
        return [detached, plain]

    jobs = daemon.run("client_0", scenario)
    names = [f"job-{j}" for j in jobs]
    assert wait_until(lambda: len(processes_in_cgroups(*names)) == 3), processes_in_cgroups(*names)
    procs = processes_in_cgroups(*names)
    assert daemon.stop() == 0, "\n".join(daemon.log)
    assert [p for p in procs if still_running(p)] == []
    assert dirs_named(*names, env.parent) == []


PIDS_CODE = """
import subprocess, time
children, failed = [], 0
for _ in range(100):
    try:
        children.append(subprocess.Popen(["sleep", "30"]))
    except OSError:
        failed += 1
print(f"started {len(children)} failed {failed}", flush=True)
time.sleep(300)
"""


def test_task_limit_contains_a_spawn_loop(env: Env) -> None:
    daemon = env.daemon()

    async def scenario(stub: Any) -> None:
        job_id = await env.start(stub, python(PIDS_CODE), limits=pb.Limits(pids=20))
        out = await read_until(stub, job_id, b"failed")
        match = re.search(rb"started (\d+) failed (\d+)", out)
        assert match, out
        started, failed = int(match[1]), int(match[2])
        print(f"pids limit 20: {started} children started, {failed} refused")
        assert started + failed == 100
        assert 1 <= started <= 19 and failed >= 81  # the interpreter itself is one task
        group = processes_in_cgroups(f"job-{job_id}")
        assert tasks(group) <= 20, group
        assert len(group) == started + 1
        if BACKEND == "v1":
            assert job_file(job_id, "pids.max") == "20"
            current = job_file(job_id, "pids.current")
            assert current is not None and int(current) <= 20
        running = await get(stub, job_id)
        assert running.limits.pids == 20
        assert running.usage.pids_limit_hits > 0
        final = await stop(stub, job_id)
        assert final.result.outcome == pb.JobResult.OUTCOME_STOPPED
        assert final.usage.pids_limit_hits >= failed > 0, final.usage
        assert [p for p in group if still_running(p)] == []

    daemon.run("client_0", scenario)


# --- limits and usage -----------------------------------------------------------------------


OOM_CODE = """
chunks = []
for i in range(50):
    chunks.append(b"x" * (10 << 20))  # written, so every page is really used
    print(f"allocated {(i + 1) * 10} MiB", flush=True)
print("survived", flush=True)
"""


def test_memory_limit_oom_kills_and_reports_it(env: Env) -> None:
    daemon = env.daemon()

    async def scenario(stub: Any) -> None:
        limits = pb.Limits(memory_bytes=100 * MiB)
        job_id = await env.start(stub, python(OOM_CODE), limits=limits)
        out, _, final, _ = await collect(stub, job_id)
        last = out.decode().strip().splitlines()[-1:] or ["nothing"]
        print(f"OOM: last line {last[0]!r}; usage {final.usage}; result {final.result}")
        assert b"survived" not in out
        assert final.result.outcome == pb.JobResult.OUTCOME_OOM_KILLED, final.result
        assert final.result.message == "killed: out of memory (limit 100 MiB)"
        assert final.result.signal == signal.SIGKILL
        assert final.usage.oom_kills >= 1
        assert final.limits.memory_bytes == 100 * MiB
        assert 50 * MiB <= final.usage.memory_peak_bytes <= 100 * MiB, final.usage

    daemon.run("client_0", scenario)


CPU_CODE = """
import time
start = time.monotonic()
while time.monotonic() - start < 2.0:
    pass
print(f"wall {time.monotonic() - start:.6f}", flush=True)
"""


def test_cpu_limit_holds_a_busy_loop(env: Env) -> None:
    daemon = env.daemon()

    async def scenario(stub: Any) -> None:
        job_id = await env.start(stub, python(CPU_CODE), limits=pb.Limits(cpu=0.2))
        out, _, final, _ = await collect(stub, job_id)
        assert final.result.exit_code == 0, final.result
        wall = float(out.split()[1])
        ratio = final.usage.cpu_seconds / wall
        print(f"cpu limit 0.2: {final.usage.cpu_seconds:.3f} s CPU in {wall:.3f} s: {ratio:.3f}")
        assert final.limits.cpu == pytest.approx(0.2)
        assert 0.1 <= ratio <= 0.3, (final.usage.cpu_seconds, wall)

    daemon.run("client_0", scenario)


IO_CODE = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
total, start = 0, time.monotonic()
while n := os.readv(fd, [buf]):
    total += n
print(f"read {total} in {time.monotonic() - start:.6f}", flush=True)
"""


def whole_disk(path: Path) -> str:
    st = os.stat(path)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    entry = Path(f"/sys/dev/block/{major}:{minor}")
    if not entry.exists() or (entry / "partition").exists():
        try:
            major, minor = block_device(path)
        except ValueError as exc:
            pytest.skip(f"needs a block device under {path}: {exc}")
    return f"{major}:{minor}"


def test_read_bandwidth_limit_slows_direct_reads(env: Env, tmp_path: Path) -> None:
    device = whole_disk(tmp_path)
    data = tmp_path / "data"
    with open(data, "wb") as f:
        f.write(os.urandom(8 * MiB))
        os.fsync(f.fileno())
    daemon = env.daemon()

    async def timed(stub: Any, limits: pb.Limits | None) -> tuple[float, Any]:
        job_id = await env.start(stub, [*python(IO_CODE), str(data)], limits=limits)
        out, err, final, _ = await collect(stub, job_id)
        assert final.result.exit_code == 0, (final.result, err)
        match = re.fullmatch(rb"read (\d+) in ([\d.]+)\n", out)
        assert match and int(match[1]) == 8 * MiB, out
        return float(match[2]), final

    async def scenario(stub: Any) -> None:
        free, _ = await timed(stub, None)
        limits = pb.Limits(io_read_bps=2 * MiB, io_device=device)
        limited, final = await timed(stub, limits)
        print(f"O_DIRECT read of 8 MiB on {device}: {free:.3f} s free, {limited:.3f} s at 2 MiB/s")
        assert final.limits.io_read_bps == 2 * MiB
        assert final.limits.io_device == device
        assert limited >= 2.0
        assert limited > 3 * free

    daemon.run("client_0", scenario, timeout=120)


def test_a_request_above_the_role_maximum_is_refused(env: Env) -> None:
    daemon = env.daemon(config_extra='\n[limits.max.user]\nmemory = "256M"\n')

    async def as_user(stub: Any) -> None:
        message = await expect_status(
            Status.INVALID_ARGUMENT,
            stub.StartJob(pb.StartJobRequest(argv=["true"], limits=pb.Limits(
                memory_bytes=512 * MiB))),
        )  # fmt: skip
        assert message == "memory limit 512 MiB is above the maximum for the user role (256 MiB)"
        # Without a memory request a user still gets the maximum.
        job_id = await env.start(stub, ["true"])
        _, _, final, _ = await collect(stub, job_id)
        assert final.limits.memory_bytes == 256 * MiB
        assert final.result.exit_code == 0

    async def as_admin(stub: Any) -> None:
        limits = pb.Limits(memory_bytes=512 * MiB)
        job_id = await env.start(stub, ["sleep", "300"], limits=limits)
        status = await get(stub, job_id)
        assert status.limits.memory_bytes == 512 * MiB
        written = job_file(job_id, "memory.limit_in_bytes") or job_file(job_id, "memory.max")
        assert written == str(512 * MiB)
        await stop(stub, job_id)

    daemon.run("client_1", as_user)
    daemon.run("client_0", as_admin)
    listed = daemon.run("client_0", lambda stub: stub.ListJobs(pb.ListJobsRequest()))
    assert len(listed.jobs) == 2  # the refused start recorded nothing


def test_a_job_without_limits_gets_the_defaults(env: Env) -> None:
    daemon = env.daemon()

    async def scenario(stub: Any) -> None:
        job_id = await env.start(stub, ["sleep", "300"])
        status = await get(stub, job_id)
        assert status.limits.pids == 4096
        for unset in ("cpu", "memory_bytes", "io_read_bps", "io_write_bps"):
            assert not status.limits.HasField(unset), status.limits
        if "pids" in CONTROLLERS:
            assert job_file(job_id, "pids.max") == "4096"
        await stop(stub, job_id)

    daemon.run("client_0", scenario)


# --- crash recovery -------------------------------------------------------------------------


def test_a_dead_daemons_cgroup_is_reaped_on_start(env: Env) -> None:
    first = env.daemon()

    async def begin(stub: Any) -> tuple[str, int]:
        job_id = await env.start(stub, ["sleep", "300"])
        status = await get(stub, job_id)
        return job_id, status.pid

    job_id, pid = first.run("client_0", begin)
    job = f"job-{job_id}"
    assert wait_until(lambda: (p := proc_info(pid)) is not None and p.comm == "sleep")
    sleeper = proc_info(pid)
    assert sleeper is not None
    env.crash(first)

    # The job outlived its daemon, still in its group in every hierarchy.
    assert still_running(sleeper)
    membership = parse_proc_cgroup(_read(f"/proc/{pid}/cgroup"))
    in_job = [m for m in membership if m.path.endswith(f"/{env.parent}/u-client_0/{job}")]
    assert len(in_job) == len(job_hierarchies(env.parent)), membership
    assert dirs_named(job)

    second = env.daemon()
    assert wait_until(lambda: not still_running(sleeper)), sleeper
    expected = f"reaped cgroup {job}, left by a jobd that died"
    assert any(expected in line for line in second.log), "\n".join(second.log)
    assert dirs_named(job) == []

    async def after(stub: Any) -> None:
        status = await get(stub, job_id)
        assert status.state == pb.JOB_STATE_FINISHED
        assert status.result.outcome == pb.JobResult.OUTCOME_LOST, status.result

    second.run("client_0", after)


def test_the_probe_left_no_group() -> None:
    assert dirs_named(PROBE) == []


def test_status_reports_memory_in_use_while_running(env: Env) -> None:
    daemon = env.daemon()
    code = (
        "import time\n"
        "b = bytearray(64 << 20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )

    async def scenario(stub: Any) -> None:
        job_id = await env.start(stub, python(code))
        await read_until(stub, job_id, b"ready")
        usage = (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).usage
        assert usage.HasField("memory_current_bytes")
        assert usage.memory_current_bytes >= 64 << 20
        final = await stop(stub, job_id)
        assert not final.usage.HasField("memory_current_bytes")  # nothing in use once ended

    daemon.run("client_0", scenario)


def test_a_daemon_the_harness_kills_leaves_no_group_or_process(
    certs: Certs, tmp_path: Path
) -> None:
    """A test that fails half-way kills its daemon (Daemon.kill): its jobs and groups go too,
    as the next daemon on that state directory would reap them."""
    state = tmp_path / "state"
    parent = cgroup_parent_for(state)
    daemon = Daemon(certs, state).start()
    try:
        job_id = daemon.run("client_0", lambda stub: start(stub, ["sleep", "300"]))
        assert processes_in_cgroups(f"job-{job_id}")
    finally:
        daemon.kill()
    assert not processes_in_cgroups(parent)
    assert dirs_named(parent) == []
