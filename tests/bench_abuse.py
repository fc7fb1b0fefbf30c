"""The abuse group of ``nox -s bench``: what a flooding or stalling client costs the daemon
(its RSS and CPU time) and the other clients (their GetJob latency), next to the same calls on
a quiet daemon.

The attacker runs in a process of its own (``python tests/bench_abuse.py reset ...``), so that
its blocking sockets never share a GIL with the bystander it is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpclib import GRPCError

from benchlib import Row, bench_daemon, cpu_seconds, open_stub, pct, record, rss_kib
from h2raw import TIMEOUT, RawClient, stalled_streams
from harness import Certs, Daemon
from jobd.v1 import jobs_pb2 as pb

GET = pb.GetJobRequest(job_id="0" * 36).SerializeToString()
LIFTED = "[connections]\nmax_resets = 1000000\n"


def frame(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(4, "big") + body


def reset_client_main(port: int, ca: str, cert: str, connections: int, streams: int) -> None:
    """Open ``connections`` connections one after another; on each, open and reset up to
    ``streams`` streams until the daemon cuts it off. Prints what got through, as JSON."""
    sent, cut_off = [], 0
    for _ in range(connections):
        client = RawClient.connect(port, Path(ca), Path(cert))
        count = 0
        try:
            for _ in range(streams):
                client.open_and_reset("GetJob", frame(GET))
                client.flush()
                if client.closed:
                    break
                count += 1
                while client.conn.outbound_flow_control_window < 1024 and not client.closed:
                    # Take the daemon's WINDOW_UPDATEs for the requests we sent.
                    client.sock.settimeout(0.01)
                    client.pump()
                    client.sock.settimeout(TIMEOUT)
        except OSError:
            pass  # cut off
        client.sock.settimeout(0.5)
        client.pump()  # the GOAWAY and the close, if the daemon has cut us off
        cut_off += client.goaway or client.closed
        sent.append(count)
        client.close()
    print(json.dumps({"sent": sent, "cut_off": cut_off}))


async def _bystander(daemon: Daemon, attacker: subprocess.Popen[str] | None,
                     n: int) -> list[float]:  # fmt: skip
    """GetJob latencies (ms) of another client: ``n`` calls, or as many as the attacker
    lasts."""
    channel, stub = await open_stub(daemon, "client_1")
    samples: list[float] = []
    try:
        await stub.ListJobs(pb.ListJobsRequest())  # connected before the clock starts
        while (attacker is None and len(samples) < n) or (
                attacker is not None and attacker.poll() is None):
            begin = time.perf_counter()
            with contextlib.suppress(GRPCError):  # NOT_FOUND: every call of the bench
                await stub.GetJob(pb.GetJobRequest(job_id="0" * 36))
            samples.append((time.perf_counter() - begin) * 1000)
    finally:
        channel.close()
    return samples


def _flood(daemon: Daemon, certs: Certs, connections: int, streams: int) -> dict[str, Any]:
    """The flood twice: alone, for the daemon's RSS and CPU time (a bystander's calls would
    cost CPU too), then with another client calling GetJob meanwhile, for its latencies."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    argv = [sys.executable, __file__, "reset", str(daemon.port), str(certs.ca),
            str(certs.client("mallory")), str(connections), str(streams)]
    rss0, cpu0 = rss_kib(pid), cpu_seconds(pid)
    got = json.loads(subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True,
                                    timeout=600).stdout)  # fmt: skip
    cost = {"rss": (rss_kib(pid) - rss0) / 1024, "cpu": cpu_seconds(pid) - cpu0}
    attacker = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        waits = asyncio.run(_bystander(daemon, attacker, 0))
        attacker.communicate(timeout=600)
    finally:
        attacker.kill()
    return {**cost, "waits": waits, **got}


def bench_abuse(certs: Certs, base: Path, quick: bool) -> None:
    print("abuse: rapid reset, stalled streams", flush=True)
    connections, streams = (10, 20_000) if quick else (50, 20_000)
    daemon = bench_daemon(certs, base / "abuse").start()
    try:
        quiet = asyncio.run(_bystander(daemon, None, 200 if quick else 1000))
        flood = _flood(daemon, certs, connections, streams)
        cut = f"{flood['cut_off']}/{connections}"
        # What the attacker wrote before it saw the close: the daemon reads 200, then GOAWAY.
        record(Row("abuse", f"rapid reset, {connections} connections one after another: "
                   f"resets sent per connection before it was closed (closed: {cut})",
                   sum(flood["sent"]) / len(flood["sent"]), "resets"))
        record(Row("abuse", "same: daemon RSS growth", flood["rss"], "MiB", target="<= 64"))
        record(Row("abuse", "same: daemon CPU time", flood["cpu"], "s"))
        for p in (50, 99):
            record(Row("abuse", f"another client's GetJob p{p} during the flood",
                       pct(flood["waits"], p), "ms", pct(quiet, p), f"p{p} on a quiet daemon",
                       "<= 50 ms" if p == 99 else ""))
        stalled_rows(daemon, certs)
    finally:
        daemon.stop()
    # The same flood with the reset limit lifted: what each reset itself costs, now that a
    # reset stream is released at once (the limit then bounds the CPU an attacker gets).
    daemon = bench_daemon(certs, base / "abuse-lifted", extra=LIFTED).start()
    try:
        lifted = _flood(daemon, certs, 1, streams)
        record(Row("abuse", f"{streams} resets on one connection, limit lifted: RSS growth",
                   lifted["rss"], "MiB"))
        record(Row("abuse", "same: daemon CPU per reset", lifted["cpu"] / streams * 1e6, "us"))
        record(Row("abuse", "same: another client's GetJob p99", pct(lifted["waits"], 99),
                   "ms"))
    finally:
        daemon.stop()


def stalled_rows(daemon: Daemon, certs: Certs) -> None:
    """200 StreamOutput calls (two connections' worth) on a 64 MiB log whose clients read
    nothing, then the same with a window opened one byte at a time."""
    assert daemon.proc is not None
    code = "import os\nfor _ in range(256): os.write(1, b'x' * (256 << 10))\n"

    async def big_job() -> str:
        channel, stub = await open_stub(daemon)
        try:
            reply = await stub.StartJob(pb.StartJobRequest(argv=[sys.executable, "-c", code]))
            async with stub.StreamOutput.open() as stream:
                await stream.send_message(pb.StreamOutputRequest(
                    job_id=reply.job_id, only=pb.OUTPUT_STREAM_STDERR), end=True)  # fmt: skip
                async for _ in stream:
                    pass
            return str(reply.job_id)
        finally:
            channel.close()

    job_id = asyncio.run(big_job())
    request = frame(pb.StreamOutputRequest(job_id=job_id).SerializeToString())
    for window in (0, 1):
        pid = daemon.proc.pid
        rss0, cpu0 = rss_kib(pid), cpu_seconds(pid)
        with stalled_streams(daemon.port, certs.ca, certs.client("client_0"), request, window):
            time.sleep(3)  # every handler reads what it may, then waits for its client
            grown, cpu = (rss_kib(pid) - rss0) / 1024, cpu_seconds(pid) - cpu0
        what = "read nothing" if not window else "opened a 1-byte window"
        record(Row("abuse", f"200 streams of a 64 MiB log whose clients {what}: RSS growth",
                   grown, "MiB", target="<= 64"))
        record(Row("abuse", "same: daemon CPU time over 3 s", cpu, "s"))


if __name__ == "__main__":
    if sys.argv[1] == "reset":
        reset_client_main(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]),
                          int(sys.argv[6]))
