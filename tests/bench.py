"""Benchmarks of jobd, each next to its floor measured in the same run.

Run with ``nox -s bench`` (``-- --quick`` for a short run, ``-- --only NAME`` for one group).
Prints one table and writes it as JSON (``--json FILE``, default bench-results.json) so runs
can be compared between commits. This machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from h2.exceptions import StreamClosedError

from bench_abuse import bench_abuse
from bench_ssh import bench_ssh
from benchlib import (
    ROWS,
    MiB,
    Row,
    bench_daemon,
    open_stub,
    pct,
    quiet_disk,
    record,
    rss_kib,
    timed_calls,
)
from harness import Certs, Daemon, bin_path, make_certs
from jobd.v1 import jobs_pb2 as pb


async def drain(stub: Any, job_id: str) -> int:
    total = 0
    async with stub.StreamOutput.open() as stream:
        await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
        async for msg in stream:
            total += sum(len(c.data) for c in msg.chunks)
    return total


# Floors


def spawn_floor(n: int) -> list[float]:
    samples = []
    for _ in range(n):
        begin = time.perf_counter()
        pid = os.posix_spawn("/bin/true", ["true"], {})
        os.waitpid(pid, 0)
        samples.append((time.perf_counter() - begin) * 1000)
    return samples


def own_spawn_floor(n: int) -> list[float]:
    """jobd's own spawn path (jobd.launch.spawn) + wait of /bin/true, inside a running trio loop."""
    import trio

    from jobd.launch.spawn import spawn

    async def main() -> list[float]:
        samples = []
        for _ in range(n):
            begin = time.perf_counter()
            child = spawn(["true"], executable="/bin/true", env={}, cwd="/")
            await child.aclose()
            samples.append((time.perf_counter() - begin) * 1000)
        return samples

    return trio.run(main)


def own_cgroup_spawn_floor(n: int) -> list[float] | None:
    """The same with a job's cgroups, outside the daemon, as the daemon does it: make the
    groups, spawn through the launcher, wait for exit, kill and wait for the group to empty,
    read the usage, remove the groups. None where cgroups cannot be made."""
    import trio

    from jobd.cgroups.detect import detect
    from jobd.launch import binary
    from jobd.launch.plan import Plan, fallback_argv, launcher_argv
    from jobd.launch.spawn import spawn
    from jobd.model.resources import Limits

    backend = detect(f"jobd-bench-floor-{os.getpid()}")
    if backend.name == "none":
        return None

    async def main() -> list[float]:
        samples = []
        for _ in range(n):
            begin = time.perf_counter()
            group = backend.create(f"job-{uuid.uuid4()}", Limits())
            plan = Plan(procs_files=tuple(map(str, group.procs_files)), search_path="/bin")
            launcher = binary.compiled()
            if launcher is None:
                argv = fallback_argv(plan, ["/bin/true"])
                child = spawn(argv, executable=argv[0], env={}, cwd="/")
            else:
                status = os.pipe2(os.O_CLOEXEC)
                argv = launcher_argv(launcher, plan, status[1], ["/bin/true"])
                child = spawn(argv, executable=launcher, env={}, cwd="/", status_pipe=status)
            await child.aclose()
            group.kill()
            await group.wait_empty()
            group.remove()
            group.usage()
            samples.append((time.perf_counter() - begin) * 1000)
        return samples

    try:
        return trio.run(main)
    finally:
        backend.remove_parent()


def floor_server_main(certs_dir: str, stream_bytes: int) -> None:
    """A bare grpclib server with jobd's TLS and trio bridge: the floor of every RPC."""
    import trio
    import trio_asyncio
    from grpclib.server import Server

    from jobd.api.tls import server_context
    from jobd.v1.jobs_grpc import JobServiceBase

    message = pb.StreamOutputResponse(
        chunks=[pb.OutputChunk(stream=pb.OUTPUT_STREAM_STDOUT, data=bytes(MiB))]
    )

    async def get_job(request: Any) -> pb.Job:
        return pb.Job(id=request.job_id)

    class Floor(JobServiceBase):
        async def GetJob(self, stream: Any) -> None:
            request = await stream.recv_message()
            await stream.send_message(await trio_asyncio.trio_as_aio(get_job)(request))

        async def StreamOutput(self, stream: Any) -> None:
            await stream.recv_message()
            for _ in range(stream_bytes // MiB):
                await stream.send_message(message)

        async def StartJob(self, stream: Any) -> None: ...
        async def StopJob(self, stream: Any) -> None: ...
        async def ListJobs(self, stream: Any) -> None: ...

    async def main() -> None:
        d = Path(certs_dir)
        ctx = server_context(d / "ca.crt", d / "server.pem")
        async with trio_asyncio.open_loop():
            server = Server([Floor()])
            await trio_asyncio.aio_as_trio(server.start)("127.0.0.1", 0, ssl=ctx)
            port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            print(port, flush=True)
            await trio.sleep_forever()

    trio.run(main)


class FloorServer:
    def __init__(self, certs: Certs, stream_bytes: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--floor-server", str(certs.dir), str(stream_bytes)],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.certs = certs

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def stream_client_main(port: int, certs_dir: str, job_id: str, count: int = 1) -> None:
    """Read ``count`` whole streams at once and discard them, as ``jobctl logs -f`` would."""
    from grpclib.client import Channel

    from jobd.api.tls import client_context
    from jobd.v1.jobs_grpc import JobServiceStub

    async def main() -> None:
        d = Path(certs_dir)
        channel = Channel("127.0.0.1", port, ssl=client_context(d / "ca.crt", d / "client_0.pem"))
        try:
            stub = JobServiceStub(channel)
            await asyncio.gather(*(drain(stub, job_id) for _ in range(count)))
        finally:
            channel.close()

    asyncio.run(main())


def create_cost(directory: Path, n: int) -> list[float]:
    """Context for StartJob, not a floor: on the VM of docs/perf-notes/lab.md, a create near inodes
    deleted in the last few minutes (an earlier run's clean-up) costs up to ~1 ms, not ~15 µs.
    The files stay until the run's end, so as not to cause it before the StartJob runs."""
    directory.mkdir()
    samples = []
    for i in range(n):
        begin = time.perf_counter()
        os.close(os.open(directory / str(i), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        samples.append((time.perf_counter() - begin) * 1000)
    return samples


def timed_process(argv: list[str], **kw: Any) -> float:
    begin = time.perf_counter()
    subprocess.run(argv, check=True, **kw)
    return time.perf_counter() - begin


# Benchmark groups


AS_USER = "as a user role job (nobody via setpriv, full isolation)"


def bench_start(certs: Certs, base: Path, n: int) -> None:
    print("start latency", flush=True)
    spawn = statistics.median(spawn_floor(n))
    record(Row("start", "spawn floor: posix_spawn+wait /bin/true p50", spawn, "ms"))
    record(Row("start", "spawn floor: jobd's own spawn path (jobd.launch.spawn) p50",
               statistics.median(own_spawn_floor(n)), "ms", spawn, "spawn floor"))
    cgroup_spawn = own_cgroup_spawn_floor(n)
    if cgroup_spawn is not None:
        record(Row("start", "spawn floor with cgroups: jobd's spawn path and its cgroups p50",
                   statistics.median(cgroup_spawn), "ms", spawn, "spawn floor"))
    floor = FloorServer(certs, 0)
    try:
        async def floor_calls() -> list[float]:
            from grpclib.client import Channel

            from jobd.api.tls import client_context
            from jobd.v1.jobs_grpc import JobServiceStub

            ctx = client_context(certs.ca, certs.client("client_0"))
            channel = Channel("127.0.0.1", floor.port, ssl=ctx)
            stub = JobServiceStub(channel)
            try:
                await stub.GetJob(pb.GetJobRequest(job_id="warm-up"))
                return await timed_calls(n, lambda: stub.GetJob(pb.GetJobRequest(job_id="x")))
            finally:
                channel.close()

        rpc = statistics.median(asyncio.run(floor_calls()))
    finally:
        floor.close()
    record(Row("start", "RPC floor: bare grpclib unary + trio hop p50", rpc, "ms"))
    record(Row("start", "a file created where the logs go (each StartJob makes one) p50",
               statistics.median(create_cost(base / "create-probe", n)), "ms"))
    full = pb.Isolation(pid=True, mount=True, network=True, uts=True, ipc=True)
    # (label, daemon flags, isolation asked for, caller): client_0 is an admin, whose jobs run
    # as root; client_1 a user, whose jobs run as nobody (setpriv in the chain).
    runs: list[tuple[str, tuple[str, ...], pb.Isolation | None, str]] = [
        ("without cgroups", ("--no-cgroups",), None, "client_0"),
        ("with cgroups", (), None, "client_0"),
        ("with cgroups and full isolation", (), full, "client_0"),
        (AS_USER, (), full, "client_1"),
    ]
    for label, extra, isolation, who in runs:
        state = base / f"start-{len(extra)}-{isolation is not None}-{who}"
        accounts = {} if who == "client_0" else {"run_as": ""}  # "": the built-in accounts
        daemon = bench_daemon(certs, state, *extra, **accounts)
        daemon.start()
        try:
            if isolation is not None and not any(
                "namespaces available: pid, mount, network, uts, ipc" in line
                for line in daemon.log
            ):
                print(f"  (skipped {label}: namespaces unavailable here; see jobd --check)")
                continue

            async def starts(daemon: Daemon, isolation: pb.Isolation | None, who: str) -> tuple[
                list[float], list[float], list[float]
            ]:
                channel, stub = await open_stub(daemon, who)
                try:
                    request = pb.StartJobRequest(argv=["/bin/true"], isolation=isolation)
                    await stub.StartJob(request)
                    ids: list[str] = []

                    async def start() -> None:
                        ids.append((await stub.StartJob(request)).job_id)

                    samples = await timed_calls(n, start)
                    for job_id in ids:
                        await _wait_finished(stub, job_id)
                    # Spawn to exit as the daemon saw it, one job at a time: what isolation
                    # adds after StartJob has answered (the job's own first steps set up its
                    # namespaces), without the previous jobs' set-up competing for the CPU.
                    alone, lives = [], []
                    for _ in range(n):
                        begin = time.perf_counter()
                        job_id = (await stub.StartJob(request)).job_id
                        alone.append((time.perf_counter() - begin) * 1000)
                        job = await _wait_finished(stub, job_id)
                        lives.append((job.ended_at.ToNanoseconds()
                                      - job.started_at.ToNanoseconds()) / 1e6)
                    return samples, alone, lives
                finally:
                    channel.close()

            samples, alone, lives = asyncio.run(starts(daemon, isolation, who))
        finally:
            daemon.stop()
        record(Row("start", f"StartJob /bin/true {label} p50", statistics.median(samples), "ms",
                   rpc + spawn, "RPC+spawn floor", "<= 1.3x"))
        record(Row("start", f"StartJob /bin/true {label} p99", pct(samples, 99), "ms"))
        record(Row("start", f"StartJob /bin/true {label}, one at a time, p50",
                   statistics.median(alone), "ms", rpc + spawn, "RPC+spawn floor"))
        record(Row("start", f"/bin/true spawn to exit {label}, one at a time, p50",
                   statistics.median(lives), "ms", spawn, "spawn floor"))
    by = {r.name: r.value for r in ROWS}
    cgroup_floor = "spawn floor with cgroups: jobd's spawn path and its cgroups p50"
    if cgroup_floor in by:
        # The RPC+spawn floor holds no cgroup work: next to the same job with its groups made,
        # joined and removed as the daemon does, what is left is the daemon's own.
        record(Row("start", "StartJob /bin/true with cgroups p50, next to its cgroup floor",
                   by["StartJob /bin/true with cgroups p50"], "ms", rpc + by[cgroup_floor],
                   "RPC + spawn-with-cgroups floor"))
    delta = by["StartJob /bin/true with cgroups p50"] - by["StartJob /bin/true without cgroups p50"]
    record(Row("start", "cgroups cost at the median", delta, "ms", target="<= 2 ms"))
    isolated = "with cgroups and full isolation"
    if f"StartJob /bin/true {isolated} p50" in by:
        # The namespaces are made by the job's first steps, after StartJob has answered; the
        # call itself pays only for the kernel tearing down the previous job's namespaces
        # (deferred work) and, back to back, for earlier jobs' set-up taking the CPU.
        rows = (("StartJob /bin/true {}, one at a time, p50", "StartJob, one at a time",
                 "<= 1.5 ms"),
                ("StartJob /bin/true {} p50", "StartJob back to back", ""),
                ("/bin/true spawn to exit {}, one at a time, p50", "spawn to exit", "<= 7 ms"))
        for name, what, target in rows:
            delta = by[name.format(isolated)] - by[name.format("with cgroups")]
            record(Row("start", f"full isolation cost at the median: {what}", delta, "ms",
                       target=target))
        if f"StartJob /bin/true {AS_USER} p50" in by:
            for name, what, _ in rows:
                delta = by[name.format(AS_USER)] - by[name.format(isolated)]
                record(Row("start", f"running as nobody, cost at the median: {what}", delta,
                           "ms"))


def bench_throughput(certs: Certs, base: Path, size: int, runs: int) -> None:
    print(f"throughput, {size // MiB} MiB to one follower", flush=True)
    pipe = timed_process(["sh", "-c", f"head -c {size} /dev/zero | cat > /dev/null"])
    record(Row("throughput", "pipe floor: head | cat", size / MiB / pipe, "MiB/s"))
    floor = FloorServer(certs, size)
    try:
        bare = statistics.median(
            timed_process([sys.executable, __file__, "--stream-client", str(floor.port),
                           str(certs.dir), "x"]) for _ in range(runs))
    finally:
        floor.close()
    stream_floor = size / MiB / bare
    record(Row("throughput", "stream floor: bare grpclib stream, same TLS", stream_floor, "MiB/s"))
    daemon = bench_daemon(certs, base / "throughput").start()
    try:
        env = daemon.jobctl_env()

        def live() -> tuple[float, str]:
            quiet_disk()
            begin = time.perf_counter()
            job = subprocess.run([bin_path("jobctl"), "start", "--", "head", "-c", str(size),
                                  "/dev/zero"], env=env, check=True, capture_output=True)
            job_id = job.stdout.decode().strip()
            subprocess.run([bin_path("jobctl"), "logs", "-f", job_id], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            return time.perf_counter() - begin, job_id

        lives = [live() for _ in range(runs)]
        seconds = statistics.median(t for t, _ in lives)
        job_id = lives[-1][1]
        record(Row("throughput", "jobd: job -> jobctl logs -f > /dev/null", size / MiB / seconds,
                   "MiB/s", stream_floor, "stream floor", ">= 0.8x"))
        # The finished job's log is still in the page cache: these rows stream, not read disk.
        grpc = statistics.median(
            timed_process([sys.executable, __file__, "--stream-client", str(daemon.port),
                           str(certs.dir), job_id]) for _ in range(runs))
        record(Row("throughput", "jobd: finished job -> grpclib client", size / MiB / grpc,
                   "MiB/s", stream_floor, "stream floor"))
        # jobctl asks for 64 KiB HTTP/2 frames (jobctl.client.MAX_FRAME_SIZE); the floor and
        # the row above keep grpclib's 16 KiB.
        ctl = statistics.median(
            timed_process([bin_path("jobctl"), "logs", job_id], env=env,
                          stdout=subprocess.DEVNULL) for _ in range(runs))
        record(Row("throughput", "jobd: finished job -> jobctl logs > /dev/null (64 KiB frames)",
                   size / MiB / ctl, "MiB/s", stream_floor, "stream floor"))
    finally:
        daemon.stop()


def timed_synced(argv: list[str], **kw: Any) -> float:
    quiet_disk()
    return timed_process(argv, **kw)


def bench_followers(certs: Certs, base: Path, size: int, followers: int) -> None:
    print(f"{followers} followers of one {size // MiB} MiB job", flush=True)
    daemon = bench_daemon(certs, base / "followers").start()
    try:
        async def start() -> str:
            channel, stub = await open_stub(daemon)
            try:
                # Output trickles out over ~2 s so followers really follow a live job.
                code = (f"import sys, time\nfor _ in range({size // MiB}):\n"
                        f"    sys.stdout.buffer.write(bytes({MiB})); sys.stdout.flush()\n"
                        f"    time.sleep({2 / max(1, size // MiB)})\n")
                reply = await stub.StartJob(pb.StartJobRequest(argv=[sys.executable, "-c", code]))
                return str(reply.job_id)
            finally:
                channel.close()

        begin = time.perf_counter()
        job_id = asyncio.run(start())
        # Four client processes (the grpclib client is CPU-bound), each following many times.
        clients = [subprocess.Popen([sys.executable, __file__, "--stream-client",
                                     str(daemon.port), str(certs.dir), job_id,
                                     str(followers // 4)])
                   for _ in range(4)]
        for c in clients:
            c.wait()
        seconds = time.perf_counter() - begin
        record(Row("followers", f"aggregate to {followers} followers", followers * size / MiB
                   / seconds, "MiB/s"))
        record(Row("followers", "daemon peak RSS", rss_kib(daemon.proc.pid, "VmHWM") / 1024,
                   "MiB"))  # type: ignore[union-attr]
    finally:
        daemon.stop()


def bench_stalled(certs: Certs, base: Path, size: int) -> None:
    print("a stalled follower", flush=True)
    daemon = bench_daemon(certs, base / "stalled").start()
    try:
        free, stalled = asyncio.run(_stalled_runs(daemon, size))
    finally:
        daemon.stop()
    record(Row("stalled", f"job writing {size // MiB} MiB, no follower", free, "s"))
    record(Row("stalled", "same job, one stalled follower", stalled, "s", free, "no follower",
               "<= 1.05x"))
    bench_capture(base, size, free)


async def _stalled_runs(daemon: Daemon, size: int) -> tuple[float, float]:
    channel, stub = await open_stub(daemon)
    # The stalled follower has a connection of its own, as a stalled client would: HTTP/2
    # flow control is per connection too, and it must not starve our own calls.
    stalled_channel, stalled_stub = await open_stub(daemon)
    try:
        async def one(stall: bool) -> float:
            quiet_disk()
            argv = ["head", "-c", str(size), "/dev/zero"]
            reply = await stub.StartJob(pb.StartJobRequest(argv=argv))
            if stall:
                async with stalled_stub.StreamOutput.open() as stream:
                    request = pb.StreamOutputRequest(job_id=reply.job_id)
                    await stream.send_message(request, end=True)
                    await stream.recv_message()  # one message, then never read again
                    job = await _wait_finished(stub, reply.job_id)
                    await stream.cancel()
            else:
                job = await _wait_finished(stub, reply.job_id)
            return (job.ended_at.ToNanoseconds() - job.started_at.ToNanoseconds()) / 1e9

        # Pairs in both orders, so that whatever the first run of a pair leaves behind (its
        # 1 GiB log to write back) weighs on both sides alike.
        free: list[float] = []
        stalled: list[float] = []
        for i in range(6):
            for stall in (False, True) if i % 2 == 0 else (True, False):
                (stalled if stall else free).append(await one(stall))
        return statistics.median(free), statistics.median(stalled)
    finally:
        channel.close()
        stalled_channel.close()


async def _wait_finished(stub: Any, job_id: str) -> Any:
    # Following stderr (these jobs write none) to the end: the final message has the status.
    async with stub.StreamOutput.open() as stream:
        request = pb.StreamOutputRequest(job_id=job_id, only=pb.OUTPUT_STREAM_STDERR)
        await stream.send_message(request, end=True)
        final = None
        async for msg in stream:
            if msg.HasField("final"):
                final = msg.final
    return final


def bench_scale(certs: Certs, base: Path, jobs: int) -> None:
    print(f"{jobs} running jobs", flush=True)
    daemon = bench_daemon(certs, base / "scale").start()
    try:
        async def scenario() -> tuple[float, list[float], float]:
            channels = [await open_stub(daemon) for _ in range(4)]
            try:
                ids: list[str] = []

                async def starter(stub: Any, count: int) -> None:
                    for _ in range(count):
                        reply = await stub.StartJob(pb.StartJobRequest(argv=["sleep", "3600"]))
                        ids.append(reply.job_id)

                begin = time.perf_counter()
                await asyncio.gather(*(starter(s, jobs // 4) for _, s in channels))
                started = time.perf_counter() - begin
                rss = rss_kib(daemon.proc.pid) / 1024  # type: ignore[union-attr]
                stub = channels[0][1]
                samples = []
                for job_id in ids:
                    t = time.perf_counter()
                    await stub.GetJob(pb.GetJobRequest(job_id=job_id))
                    samples.append((time.perf_counter() - t) * 1000)
                return started, samples, rss
            finally:
                for channel, _ in channels:
                    channel.close()

        started, samples, rss = asyncio.run(scenario())
        record(Row("scale", f"starting {jobs} sleep jobs, 4 clients", started, "s",
                   target="<= 3 s"))
        record(Row("scale", f"daemon RSS with {jobs} running jobs", rss, "MiB",
                   target="<= 100 MiB"))
        record(Row("scale", "GetJob p50 then", statistics.median(samples), "ms"))
        record(Row("scale", "GetJob p99 then", pct(samples, 99), "ms", target="<= 20 ms"))
        begin = time.perf_counter()
        daemon.stop()
        record(Row("scale", f"shutdown stopping {jobs} jobs", time.perf_counter() - begin, "s"))
    finally:
        daemon.kill()


def bench_history(certs: Certs, base: Path, count: int) -> None:
    print(f"list with {count} finished jobs in history", flush=True)
    state = base / "history"
    bench_daemon(certs, state).start().stop()  # creates the schema
    db = sqlite3.connect(state / "jobs.db")
    now = time.time()
    record_text = json.dumps({"argv": ["true"], "env": {}, "cwd": "/", "result": {
        "outcome": "exited", "message": "exited with code 0", "exit_code": 0, "signal": None,
        "stopped_by": ""}, "output_bytes": 0})
    rows = [(str(uuid.uuid4()), f"client_{i % 3}", "finished", now - count + i, now - count + i,
             record_text) for i in range(count)]
    with db:
        db.executemany("INSERT INTO jobs (id, owner, state, created_at, ended_at, record) "
                       "VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.close()
    daemon = bench_daemon(certs, state).start()
    try:
        async def scenario() -> tuple[list[float], list[float]]:
            channel, stub = await open_stub(daemon)
            try:
                page = await timed_calls(20, lambda: stub.ListJobs(pb.ListJobsRequest()))
                small = await timed_calls(50, lambda: stub.ListJobs(pb.ListJobsRequest(limit=50)))
                return page, small
            finally:
                channel.close()

        page, small = asyncio.run(scenario())
        record(Row("history", "ListJobs newest 1000 of all, p50", statistics.median(page), "ms"))
        record(Row("history", "ListJobs newest 50, p50", statistics.median(small), "ms"))
        record(Row("history", "ListJobs newest 50, p99", pct(small, 99), "ms"))
        env = daemon.jobctl_env()
        cli = [timed_process([bin_path("jobctl"), "list"], env=env, stdout=subprocess.DEVNULL)
               for _ in range(5)]
        record(Row("history", "jobctl list (whole process), p50", statistics.median(cli) * 1000,
                   "ms"))
    finally:
        daemon.stop()


# What `jobctl status ID` does, with nothing of jobctl around it but its protobuf import
# (jobctl.lazyproto), leaving the way jobctl does (os._exit once the output is flushed): the
# least a Python process can take for that command.
BARE_STATUS_CLIENT = """\
import asyncio, os, sys
from pathlib import Path
from jobctl.lazyproto import defer_python_message
defer_python_message()
from grpclib.client import Channel
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub
async def main():
    host, port = os.environ["JOBCTL_SERVER"].rsplit(":", 1)
    ctx = client_context(Path(os.environ["JOBCTL_CACERT"]), Path(os.environ["JOBCTL_CERT"]))
    channel = Channel(host, int(port), ssl=ctx)
    try:
        return await JobServiceStub(channel).GetJob(pb.GetJobRequest(job_id=sys.argv[1]))
    finally:
        channel.close()
print(asyncio.run(main()))
sys.stdout.flush()
os._exit(0)
"""


def bench_cli(certs: Certs, base: Path, n: int) -> None:
    print("CLI start-up", flush=True)
    daemon = bench_daemon(certs, base / "cli").start()
    try:
        env = daemon.jobctl_env()
        job_id = subprocess.run([bin_path("jobctl"), "start", "--", "true"], env=env,
                                check=True, capture_output=True).stdout.decode().strip()
        # Byte code cached, as an installed jobctl has it (pip compiles it, as it did the
        # floor's packages).
        cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        runs: dict[str, tuple[list[str], dict[str, str]]] = {
            "floor": ([sys.executable, "-c", "import grpclib.client, google.protobuf"], cached),
            "help": ([bin_path("jobctl"), "--help"], cached),
            "status": ([bin_path("jobctl"), "status", job_id], cached),
            "protobuf": ([sys.executable, "-c", "import grpclib.client, google.protobuf, "
                          "jobd.v1.jobs_pb2"], cached),
            "deferred": ([sys.executable, "-c", "import jobctl.lazyproto as lazy; "
                          "lazy.defer_python_message(); import grpclib.client, "
                          "google.protobuf, jobd.v1.jobs_pb2"], cached),
            "bare": ([sys.executable, "-c", BARE_STATUS_CLIENT, job_id], cached),
        }
        for argv, run_env in runs.values():  # warm-up; fills the byte code cache
            timed_process(argv, env=run_env, stdout=subprocess.DEVNULL)
        samples: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(n):  # interleaved: the machine's drift hits every row alike
            for label, (argv, run_env) in runs.items():
                samples[label].append(timed_process(argv, env=run_env,
                                                    stdout=subprocess.DEVNULL) * 1000)
    finally:
        daemon.stop()
    p50 = {label: statistics.median(values) for label, values in samples.items()}
    floor = p50["floor"]
    record(Row("cli", "CLI floor: python + import grpclib.client, protobuf", floor, "ms"))
    for label, name, target in (
        ("help", "jobctl --help (whole process) p50", "<= 1.2x"),
        ("status", "jobctl status ID (whole process) p50", "<= 1.2x"),
        ("protobuf", "CLI floor + protobuf runtime and jobd.v1.jobs_pb2 p50", ""),
        ("deferred", "the same, protobuf's python_message deferred (jobctl.lazyproto) p50", ""),
        ("bare", "bare grpclib client: mTLS connect + GetJob, exit as jobctl, p50", ""),
    ):
        record(Row("cli", name, p50[label], "ms", floor, "CLI floor", target))


def bench_latency(certs: Certs, base: Path, n: int, seconds: float) -> None:
    print("first byte and sustained starts", flush=True)
    daemon = bench_daemon(certs, base / "latency").start()
    try:
        async def first_bytes() -> list[float]:
            channel, stub = await open_stub(daemon)
            try:
                samples = []
                for _ in range(n):
                    begin = time.perf_counter()
                    reply = await stub.StartJob(pb.StartJobRequest(argv=["echo", "x"]))
                    async with stub.StreamOutput.open() as stream:
                        request = pb.StreamOutputRequest(job_id=reply.job_id)
                        await stream.send_message(request, end=True)
                        async for msg in stream:
                            if msg.chunks:
                                samples.append((time.perf_counter() - begin) * 1000)
                                # The job may have ended already, and its stream with it.
                                with contextlib.suppress(StreamClosedError):
                                    await stream.cancel()
                                break
                return samples
            finally:
                channel.close()

        samples = asyncio.run(first_bytes())
        record(Row("latency", "StartJob to first output byte at a follower p50",
                   statistics.median(samples), "ms"))
        record(Row("latency", "StartJob to first output byte p99", pct(samples, 99), "ms"))

        async def sustained() -> int:
            channels = [await open_stub(daemon) for _ in range(4)]
            deadline = time.perf_counter() + seconds
            count = 0

            async def client(stub: Any) -> None:
                nonlocal count
                request = pb.StartJobRequest(argv=["/bin/true"])
                while time.perf_counter() < deadline:
                    await stub.StartJob(request)
                    count += 1

            try:
                await asyncio.gather(*(client(s) for _, s in channels))
            finally:
                for channel, _ in channels:
                    channel.close()
            return count

        count = asyncio.run(sustained())
        record(Row("latency", f"StartJob /bin/true, 4 clients for {seconds:g} s",
                   count / seconds, "starts/s", target=">= 300/s"))
    finally:
        daemon.stop()


def bench_loaded(certs: Certs, base: Path, n: int) -> None:
    """GetJob latency from one client, idle and while another client's job writes its output
    flat out (issue 23: today the pumps' log writes share the event loop with every RPC)."""
    print("GetJob latency while a job writes flat out", flush=True)
    # A cap above what the calls take to run, so that the job writes to disk throughout.
    daemon = bench_daemon(certs, base / "loaded", "--max-output", str(16 << 30)).start()
    try:
        async def latencies() -> tuple[list[float], list[float], list[float], int]:
            channel, stub = await open_stub(daemon)
            writer_channel, writer = await open_stub(daemon, "client_1")
            try:
                probe = (await stub.StartJob(pb.StartJobRequest(argv=["true"]))).job_id
                request = pb.GetJobRequest(job_id=probe)
                await timed_calls(50, lambda: stub.GetJob(request))  # warm
                idle = await timed_calls(n, lambda: stub.GetJob(request))
                quiet_disk()
                busy = await writer.StartJob(pb.StartJobRequest(
                    argv=["head", "-c", str(16 << 30), "/dev/zero"]))
                loaded = await timed_calls(n, lambda: stub.GetJob(request))
                job = await writer.GetJob(pb.GetJobRequest(job_id=busy.job_id))
                await writer.StopJob(pb.StopJobRequest(job_id=busy.job_id))
                # The same load outside jobd, on the same disk: what the machine's two cores
                # give a client while a process writes flat out, with jobd doing nothing.
                sink = base / "loaded-outside"
                quiet_disk()
                with sink.open("wb") as f:
                    outside = subprocess.Popen(["head", "-c", str(16 << 30), "/dev/zero"],  # noqa: ASYNC220
                                               stdout=f)
                try:
                    beside = await timed_calls(n, lambda: stub.GetJob(request))
                finally:
                    outside.kill()
                    outside.wait()
                    sink.unlink()
                return idle, loaded, beside, job.output_bytes
            finally:
                channel.close()
                writer_channel.close()

        idle, loaded, beside, written = asyncio.run(latencies())
        record(Row("loaded", "GetJob p50 while a job writes flat out", statistics.median(loaded),
                   "ms", statistics.median(idle), "idle p50"))
        record(Row("loaded", "GetJob p99 while a job writes flat out", pct(loaded, 99), "ms",
                   pct(idle, 99), "idle p99", "<= 1.5x"))
        record(Row("loaded", "GetJob p99 while a process outside jobd writes the same",
                   pct(beside, 99), "ms", pct(idle, 99), "idle p99"))
        print(f"  (the writer had written {written / MiB:.0f} MiB when the calls ended, and "
              "was then stopped)")
    finally:
        daemon.stop()


def grpcio_client_main(port: int, certs_dir: str, job_id: str) -> None:
    """Follow a job with Google's C-core client (grpcio), no generated code needed."""
    import grpc

    d = Path(certs_dir)
    pem = (d / "client_0.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.crt").read_bytes(), private_key=pem, certificate_chain=pem
    )
    options = [("grpc.ssl_target_name_override", "localhost"),
               ("grpc.max_receive_message_length", 16 * MiB)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        call = channel.unary_stream(
            "/jobd.v1.JobService/StreamOutput",
            request_serializer=pb.StreamOutputRequest.SerializeToString,
            response_deserializer=pb.StreamOutputResponse.FromString,
        )
        total = sum(len(c.data) for msg in call(pb.StreamOutputRequest(job_id=job_id))
                    for c in msg.chunks)
    print(total)


def bench_grpcio(certs: Certs, base: Path, size: int) -> None:
    print(f"grpcio client, {size // MiB} MiB", flush=True)
    daemon = bench_daemon(certs, base / "grpcio").start()
    try:
        async def start() -> str:
            channel, stub = await open_stub(daemon)
            try:
                argv = ["head", "-c", str(size), "/dev/zero"]
                return str((await stub.StartJob(pb.StartJobRequest(argv=argv))).job_id)
            finally:
                channel.close()

        begin = time.perf_counter()
        job_id = asyncio.run(start())
        out = subprocess.run([sys.executable, __file__, "--grpcio-client", str(daemon.port),
                              str(certs.dir), job_id], check=True, capture_output=True)
        seconds = time.perf_counter() - begin
        assert int(out.stdout) == size, out.stdout
        record(Row("grpcio", "jobd: job -> grpcio (C-core) client", size / MiB / seconds,
                   "MiB/s"))
    finally:
        daemon.stop()


def bench_capture(base: Path, size: int, captured: float) -> None:
    """Called by the stalled group: how much capture costs a job that writes flat out.

    Output is kept on disk, so the fair floor is the same bytes written to a file on the
    same disk (under the same page-cache writeback), not only a pipe into /dev/null.
    """
    pipe = timed_process(["sh", "-c", f"head -c {size} /dev/zero | cat > /dev/null"])
    record(Row("stalled", f"same {size // MiB} MiB through a plain pipe", pipe, "s"))
    target = base / "disk-floor"
    disk = timed_synced(["sh", "-c", f"head -c {size} /dev/zero | cat > {target}"])
    target.unlink()
    record(Row("stalled", f"same {size // MiB} MiB through a pipe into a file", disk, "s"))
    record(Row("stalled", "job's run time captured by jobd vs pipe into a file", captured, "s",
               disk, "pipe into a file"))


GROUPS = ("start", "throughput", "followers", "stalled", "scale", "history", "cli", "latency",
          "grpcio", "abuse", "ssh", "loaded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer samples")
    parser.add_argument("--only", choices=GROUPS, action="append", help="run only these groups")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args()
    quick = args.quick
    groups = args.only or list(GROUPS)
    with tempfile.TemporaryDirectory(prefix="jobd-bench-") as tmp:
        base = Path(tmp)
        (base / "certs").mkdir()
        certs = make_certs(base / "certs")
        if "start" in groups:
            bench_start(certs, base, 100 if quick else 500)
        if "throughput" in groups:
            bench_throughput(certs, base, (256 if quick else 1024) * MiB, 1 if quick else 3)
        if "followers" in groups:
            bench_followers(certs, base, (8 if quick else 32) * MiB, 20 if quick else 100)
        if "stalled" in groups:
            bench_stalled(certs, base, (256 if quick else 1024) * MiB)
        if "scale" in groups:
            bench_scale(certs, base, 200 if quick else 1000)
        if "history" in groups:
            bench_history(certs, base, 10_000 if quick else 100_000)
        if "cli" in groups:
            bench_cli(certs, base, 5 if quick else 20)
        if "latency" in groups:
            bench_latency(certs, base, 50 if quick else 200, 3 if quick else 10)
        if "grpcio" in groups:
            bench_grpcio(certs, base, (256 if quick else 1024) * MiB)
        if "abuse" in groups:
            bench_abuse(certs, base, quick)
        if "ssh" in groups:
            bench_ssh(certs, base, (256 if quick else 1024) * MiB, 1 if quick else 3)
        if "loaded" in groups:
            bench_loaded(certs, base, 500 if quick else 2000)
    print()
    print(table())
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "quick": quick}
    args.json.write_text(json.dumps({"meta": meta, "rows": [asdict(r) | {"ratio": r.ratio}
                                                            for r in ROWS]}, indent=1))


def table() -> str:
    lines = ["| benchmark | value | floor | ratio | target |", "|---|---|---|---|---|"]
    for r in ROWS:
        floor = f"{r.floor:.3f} {r.unit} ({r.floor_name})" if r.floor else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        name = r.name.replace("|", "\\|")  # "head | cat" must not split the row
        lines.append(f"| {name} | {r.value:.3f} {r.unit} | {floor} | {ratio} | {r.target} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-server":
        floor_server_main(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--grpcio-client":
        grpcio_client_main(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--stream-client":
        stream_client_main(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5:6][0])
                           if len(sys.argv) > 5 else 1)
    else:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        main()
