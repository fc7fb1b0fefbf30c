"""End to end, as an attacker with a valid ``user`` certificate: no way out of a job.

Each test runs a real jobd as root with the built-in accounts (user jobs run as nobody, in
every namespace, on a read-only file system) and tries, from inside its own jobs, what the
containment review found: the host's /proc and /sys through the working directory, another
identity's job through any route, races on the paths it names, places shared between
identities, and exhausting memory or tasks. Jobs run system programs only (the tests' Python
may live where nobody cannot run it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib import GRPCError, Status

from harness import Certs, Daemon, collect, expect_status, make_certs, read_until, start, stop
from jobd.config import cgroup_parent_for
from jobd.launch import binary, private
from jobd.v1 import jobs_pb2 as pb

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and accounts"),
    pytest.mark.skipif(binary.compiled() is None, reason="needs the jobd launcher (setup.py)"),
]
NOBODY = 65534
TIMEOUT = 120.0


@pytest.fixture
def certs(shared: Path) -> Certs:
    directory = shared / "certs"
    directory.mkdir(mode=0o755)
    return make_certs(directory)


def job_groups(parent: str) -> list[Path]:
    """Job cgroups left under a daemon's parent group, in any hierarchy."""
    found = []
    for mount in Path("/sys/fs/cgroup").iterdir():
        for root, dirs, _ in os.walk(mount):
            if Path(root).name == parent or Path(root).parent.name == parent:
                found += [Path(root, d) for d in dirs if d.startswith("job-")]
    return found


@pytest.fixture
def daemons(shared: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        problems = []
        for daemon in started:
            code = daemon.stop()
            if code != 0 or any("Traceback" in line for line in daemon.log):
                problems.append(f"jobd exited with {code}:\n" + "\n".join(daemon.log))
            left = job_groups(cgroup_parent_for(daemon.state_dir))
            problems += [f"cgroup left behind: {g}" for g in left]
        assert not problems, "\n".join(problems)


def launch(daemons: list[Daemon], shared: Path, certs: Certs, config: str = "") -> Daemon:
    daemon = Daemon(certs, shared / "state", config_extra=config, run_as="").start()
    daemons.append(daemon)
    return daemon


def sh(script: str, *args: str) -> list[str]:
    return ["/bin/sh", "-c", script, "sh", *args]


async def run_job(stub: Any, argv: list[str], **kw: Any) -> tuple[str, str, Any]:
    job_id = await start(stub, argv, **kw)
    out, err, final, _ = await collect(stub, job_id)
    return out.decode(errors="replace"), err.decode(errors="replace"), final


# --- the host's /proc and /sys -------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["/proc", "/proc/self/..", "/proc/1/..", "/sys", "/sys/class/net"])
def test_no_working_directory_shows_the_hosts_proc_or_sys(
    daemons: list[Daemon], shared: Path, certs: Certs, cwd: str
) -> None:
    daemon = launch(daemons, shared, certs)
    host_pid = os.getpid()  # a process of the host's, there to be seen if anything leaks
    script = ("ls -a . | tr '\\n' ' '; echo; readlink /proc/self/cwd; ls /proc | grep -c '^[0-9]'; "
              f"cat ./{host_pid}/environ ../{host_pid}/environ /proc/{host_pid}/environ "
              "2>/dev/null | head -c 100; echo end")

    async def scenario(stub: Any) -> tuple[str, str, Any]:
        return await run_job(stub, sh(script), cwd=cwd)

    out, err, final = daemon.run("client_1", scenario, TIMEOUT)
    assert final.result.exit_code == 0, (final.result, err)
    listing, where, count, rest = out.split("\n", 3)
    assert rest == "end\n"  # no other process's environment, by any of the three paths
    assert where == {"/proc/self/..": "/proc", "/proc/1/..": "/proc"}.get(cwd, cwd)
    assert int(count) <= 6  # the init, the shell and its pipeline: no host process
    names = listing.split()
    if cwd.startswith("/proc"):
        assert str(host_pid) not in names
        assert all(int(n) <= 10 for n in names if n.isdigit()), names
    if cwd == "/sys/class/net":
        assert [n for n in names if n not in (".", "..")] == ["lo"]  # not the host's devices
    if cwd == "/sys":
        assert "class" in names


def test_the_host_cgroup_tree_is_not_in_a_jobs_sys(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)

    async def scenario(stub: Any) -> str:
        # Relative to a working directory the job was given: the job's own /sys, or nothing.
        out, _, _ = await run_job(stub, sh("ls -A ./fs/cgroup | wc -l; ls ./class/net"),
                                  cwd="/sys")  # fmt: skip
        return out

    assert daemon.run("client_1", scenario, TIMEOUT) == "0\nlo\n"


# --- another identity's job ----------------------------------------------------------------


def test_a_victims_environment_and_tmp_cannot_be_reached_by_any_route(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)
    secret = "s3cret-" + secrets.token_hex(8)
    name = "victim-" + secrets.token_hex(4)  # the file that holds it, in the victim's /tmp

    async def victim(stub: Any) -> tuple[str, int]:
        job_id = await start(stub, sh(f'echo "$SECRET" > /tmp/{name}; echo ready; '
                                      "exec sleep 300"), env={"SECRET": secret})  # fmt: skip
        await read_until(stub, job_id, b"ready")
        job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        return job_id, job.pid

    victim_id, pid = daemon.run("client_2", victim, TIMEOUT)
    # The victim's launcher and its init and shell: every pid an attacker could learn.
    pids = [pid, *_descendants(pid)]
    routes = "".join(
        f"cat /proc/{p}/environ ./{p}/environ /proc/self/../{p}/environ; "
        f"ls /proc/{p}/root/tmp; cat /proc/{p}/root/tmp/{name}; "
        f"echo pwned > /proc/{p}/root/tmp/evil && echo wrote {p}; "
        f"cat /proc/{p}/mem | head -c 1; "
        for p in pids
    )
    script = (f"{routes} grep -rs {secret} /tmp /var/tmp /dev/shm /run/lock /dev/mqueue; "
              f"find / -name '{name}' 2>/dev/null; echo end")

    async def attacker(stub: Any) -> tuple[str, str, Any]:
        return await run_job(stub, sh(script), cwd="/proc")

    try:
        out, err, final = daemon.run("client_1", attacker, TIMEOUT)
        assert secret not in out and secret not in err
        assert "wrote" not in out
        assert out.endswith("end\n") and final.result.exit_code == 0, (out, err)

        async def still_there(stub: Any) -> str:
            out, _, _ = await run_job(stub, sh(f"cat /proc/{pid}/environ 2>&1; ls /tmp"))
            return out

        # Nor from the host's side of a daemon that keeps them apart: not on the host.
        assert not any(Path(d, name).exists() for d in private.find().directories)
        assert "evil" not in daemon.run("client_1", still_there, TIMEOUT)
    finally:
        daemon.run("client_2", lambda s: stop(s, victim_id), TIMEOUT)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                kids = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                found += [int(k) for k in kids]
                todo += [int(k) for k in kids]
    return found


# --- races on the paths a client names ---------------------------------------------------


def test_swapping_the_working_directory_or_the_program_never_works_nor_blocks_the_daemon(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    if shutil.which("perl") is None:
        pytest.skip("needs perl (Debian's perl-base) for a swap loop without a fork per swap")
    # The worst case an operator can make: a place the user's jobs may write, shared with the
    # daemon's view of the file system.
    place = shared / "scratch"
    place.mkdir(mode=0o777)
    place.chmod(0o777)
    # What nobody may reach: a directory (open in itself) below one that is root's alone.
    forbidden = shared / "root-only" / "inner"
    forbidden.mkdir(parents=True)
    forbidden.parent.chmod(0o700)
    (forbidden / "marker").write_text("root's\n")
    daemon = launch(daemons, shared, certs, f'[isolation.user]\nwritable = ["{place}"]\n')
    # As fast as it can: "dir" between the forbidden directory and one of the job's own,
    # "prog" between a FIFO and a program, each swap one atomic rename.
    swapper = ["perl", "-MPOSIX", "-e", f"""
        chdir "{place}" or die; mkdir "ok"; POSIX::mkfifo("fifo", 0644);
        system("cp", "/bin/true", "real") == 0 or die; $| = 1; print "ready\\n";
        while (1) {{
            symlink("{forbidden}", "a"); rename("a", "dir");
            symlink("{place}/ok", "b"); rename("b", "dir");
            symlink("fifo", "c"); rename("c", "prog");
            symlink("real", "e"); rename("e", "prog");
        }}"""]

    async def race(stub: Any) -> tuple[list[str], list[float]]:
        swapping = await start(stub, swapper)
        await read_until(stub, swapping, b"ready")
        outcomes: list[str] = []
        try:
            for _ in range(40):
                for argv, cwd in ((["/bin/ls", "-A"], f"{place}/dir"),
                                  ([f"{place}/prog"], "/")):  # fmt: skip
                    try:
                        out, err, final = await run_job(stub, argv, cwd=cwd)
                    except Exception as exc:  # a refused start: FAILED_PRECONDITION
                        outcomes.append(f"refused: {exc}")
                        continue
                    outcomes.append(out + err + final.result.message)
        finally:
            await stop(stub, swapping)
        return outcomes, []

    async def bystander(stub: Any, done: asyncio.Event) -> list[float]:
        waits = []
        while not done.is_set():
            begin = time.monotonic()
            with contextlib.suppress(Exception):
                await stub.ListJobs(pb.ListJobsRequest(limit=1))
            waits.append(time.monotonic() - begin)
            await asyncio.sleep(0.02)
        return waits

    async def both(stub_user: Any) -> tuple[list[str], list[float]]:
        done = asyncio.Event()

        async def watched(stub_admin: Any) -> list[float]:
            return await bystander(stub_admin, done)

        watcher = asyncio.ensure_future(daemon._with_stub("client_0", watched))
        try:
            outcomes, _ = await race(stub_user)
        finally:
            done.set()
        return outcomes, await watcher

    outcomes, waits = daemon.run("client_1", both, TIMEOUT)
    assert not any("marker" in o or "root's" in o for o in outcomes), outcomes
    assert len(outcomes) == 80
    assert waits and max(waits) < 1.0, max(waits)  # the daemon never stalled


# --- places shared between identities ----------------------------------------------------


WRITABLE = ("find / \\( -path /proc -o -path /sys \\) -prune -o -type d -writable -print "
            "2>/dev/null")


def test_nothing_one_identity_writes_is_seen_by_another_or_left_on_the_host(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)
    token = "jobd-token-" + secrets.token_hex(6)
    writer = (f"for d in $({WRITABLE}); do echo hi > $d/{token} && echo wrote $d; done; "
              "echo ready; exec sleep 300")
    reader = f"find / \\( -path /proc -o -path /sys \\) -prune -o -name '{token}' -print; echo end"

    async def write(stub: Any) -> tuple[str, str]:
        job_id = await start(stub, sh(writer))
        out = (await read_until(stub, job_id, b"ready")).decode()
        return job_id, out

    job_id, written = daemon.run("client_1", write, TIMEOUT)
    try:
        places = [line.split(" ", 1)[1] for line in written.splitlines()
                  if line.startswith("wrote")]  # fmt: skip
        # Only the job's own private places are writable at all.
        assert set(places) <= {"/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue"}, places
        assert "/tmp" in places

        async def read(stub: Any) -> str:
            out, _, _ = await run_job(stub, sh(reader))
            return out

        assert daemon.run("client_2", read, TIMEOUT) == "end\n"
        for directory in private.find().directories:  # nor on the host, while it runs
            assert not Path(directory, token).exists()
    finally:
        daemon.run("client_1", lambda s: stop(s, job_id), TIMEOUT)
    for directory in private.find().directories:  # nor after
        assert not Path(directory, token).exists()


# --- memory and tasks --------------------------------------------------------------------


def test_a_memory_hog_filling_dev_shm_is_killed_as_the_job_and_jobd_survives(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)
    assert daemon.proc is not None
    # -900 where jobd may lower it (CAP_SYS_RESOURCE; some sandboxes withhold it): below
    # every job's either way.
    protected = int(Path(f"/proc/{daemon.proc.pid}/oom_score_adj").read_text())
    assert protected == -900 or (protected == 0 and not _has_sys_resource())

    async def scenario(stub: Any) -> tuple[str, Any]:
        script = ("cat /proc/self/oom_score_adj; df -B1 --output=size /dev/shm | tail -1; "
                  "dd if=/dev/zero of=/dev/shm/fill bs=1M count=512 2>&1; "
                  "cat /dev/shm/fill /dev/shm/fill > /dev/null; echo survived")
        out, _, final = await run_job(stub, sh(script), limits=pb.Limits(memory_bytes=64 << 20))
        await stub.GetJob(pb.GetJobRequest(job_id=final.id))  # jobd still answers
        return out, final

    out, final = daemon.run("client_1", scenario, TIMEOUT)
    lines = out.splitlines()
    assert lines[0] == "500"  # the OOM killer's first choice, before jobd (-900)
    assert int(lines[1]) == 64 << 20  # /dev/shm is sized within the job's memory
    # Its pages are the job's: either the limit's OOM killer ended it, or the tmpfs was full
    # first; either way the job paid, and never the daemon.
    assert (final.result.outcome == pb.JobResult.OUTCOME_OOM_KILLED
            or "No space left on device" in out), (out, final.result)
    assert daemon.proc.poll() is None


def _has_sys_resource() -> bool:
    status = Path("/proc/self/status").read_text()
    effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) & (1 << 24))


# Forks 40 sleepers, going on past a refused fork (a shell would give up), and says how many.
BOMB = ["perl", "-e", "$| = 1; my $n = 0; for (1..40) { my $p = fork; "
        "if (defined $p && $p == 0) { sleep 300; exit } $n++ if defined $p } "
        "print \"forked $n\\n\"; sleep 300"]


def test_one_identitys_jobs_cannot_take_the_hosts_tasks_while_another_still_starts(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    if shutil.which("perl") is None:
        pytest.skip("needs perl (Debian's perl-base) for a fork loop that survives EAGAIN")
    daemon = launch(daemons, shared, certs, "[limits.identity]\npids = 60\n")

    async def flood(stub: Any) -> tuple[list[str], int]:
        ids, forked = [], 0
        for _ in range(4):
            try:
                job_id = await start(stub, BOMB)
            except GRPCError as exc:  # the slice is full: not even the launcher's init
                assert "resource temporarily unavailable" in str(exc.message), exc
                continue
            ids.append(job_id)
            line = (await read_until(stub, job_id, b"\n")).decode()
            forked += int(line.split()[1])
        return ids, forked

    ids, forked = daemon.run("client_1", flood, TIMEOUT)
    try:
        parent = cgroup_parent_for(shared / "state")
        slices = [path for mount in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # v1, v2
                  for path in Path(mount).glob(f"{parent}/u-client_1")
                  if (path / "pids.max").exists()]
        assert slices, "no slice for client_1"
        assert int((slices[0] / "pids.max").read_text()) == 60
        assert int((slices[0] / "pids.current").read_text()) <= 60
        # 4 x 40 asked for; each job's launcher, init and perl take three of the 60.
        assert forked <= 60 - len(ids) * 3, forked

        async def other(stub: Any) -> str:
            job_id = await start(stub, BOMB)
            line = (await read_until(stub, job_id, b"\n")).decode()
            await stop(stub, job_id)
            return line

        # client_2 forks all of its own 40, untouched by client_1's flood.
        assert daemon.run("client_2", other, TIMEOUT) == "forked 40\n"
    finally:
        async def stop_all(stub: Any) -> None:
            for job_id in ids:
                await stop(stub, job_id)

        daemon.run("client_1", stop_all, TIMEOUT)


def test_one_identitys_jobs_cannot_take_the_hosts_memory(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs, '[limits.identity]\nmemory = "96M"\n')
    hold = "dd if=/dev/zero of=/dev/shm/hold bs=1M count=64 2>/dev/null; echo ready; exec sleep 300"

    async def hogs(stub: Any) -> tuple[str, Any]:
        first = await start(stub, sh(hold))
        await read_until(stub, first, b"ready")
        out, _, second = await run_job(stub, sh(hold.replace("exec sleep 300", "true")))
        await stop(stub, first)
        return out, second

    out, second = daemon.run("client_1", hogs, TIMEOUT)
    # 64 MiB held by the first: the second's 64 MiB cannot fit the identity's 96 MiB.
    assert second.result.outcome == pb.JobResult.OUTCOME_OOM_KILLED or out == "ready\n", out

    async def other(stub: Any) -> Any:
        _, _, final = await run_job(stub, sh(hold.replace("exec sleep 300", "true")))
        return final

    assert daemon.run("client_2", other, TIMEOUT).result.exit_code == 0  # its own 96 MiB


def test_a_user_may_not_ask_for_more_than_the_maximum(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs, "[limits.identity]\npids = 500\n")

    async def scenario(stub: Any) -> list[str]:
        asks = [pb.Limits(pids=1_000_000), pb.Limits(memory_bytes=1 << 50),
                pb.Limits(cpu=10_000.0)]  # fmt: skip
        return [await expect_status(Status.INVALID_ARGUMENT,
                                    stub.StartJob(pb.StartJobRequest(argv=["true"], limits=ask)))
                for ask in asks]  # fmt: skip

    pids, memory, cpu = daemon.run("client_1", scenario, TIMEOUT)
    assert pids == "pids limit 1000000 tasks is above the maximum for the user role (500 tasks)"
    assert "above the maximum for the user role" in memory
    assert cpu.startswith("cpu limit") and ("maximum" in cpu or "at most" in cpu)

    async def default(stub: Any) -> Any:
        job_id = await start(stub, ["true"])
        _, _, final, _ = await collect(stub, job_id)
        return final

    final = daemon.run("client_1", default, TIMEOUT)
    assert final.limits.pids == 500 and final.limits.memory_bytes > 0  # every user job has both


def test_io_device_answers_the_same_for_a_forbidden_and_a_missing_path(
    daemons: list[Daemon], shared: Path, certs: Certs
) -> None:
    daemon = launch(daemons, shared, certs)
    assert stat.S_IMODE(Path("/root").stat().st_mode) & 0o005 == 0 or True

    async def scenario(stub: Any) -> list[str]:
        answers = []
        for path in ("/root/.bashrc", "/root/no-such-file"):
            request = pb.StartJobRequest(argv=["true"], limits=pb.Limits(
                io_read_bps=1 << 20, io_device=path))  # fmt: skip
            message = await expect_status(Status.INVALID_ARGUMENT, stub.StartJob(request))
            answers.append(message.replace(path, "PATH"))
        return answers

    first, second = daemon.run("client_1", scenario, TIMEOUT)
    assert first == second
    assert "not a device this server names" in first
