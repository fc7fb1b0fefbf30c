"""Prometheus metrics: the exposition text, and a daemon counting what it did."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from grpclib import Status

from harness import Certs, Daemon, collect, expect_status, start
from jobd.api.metrics import Metrics
from jobd.v1 import jobs_pb2 as pb


def test_histogram_buckets_are_cumulative() -> None:
    m = Metrics()
    m.job_started(0.002)
    m.job_started(0.03)
    text = m.render()
    assert 'jobd_start_seconds_bucket{le="0.001"} 0' in text
    assert 'jobd_start_seconds_bucket{le="0.0025"} 1' in text
    assert 'jobd_start_seconds_bucket{le="0.05"} 2' in text
    assert 'jobd_start_seconds_bucket{le="+Inf"} 2' in text
    assert "jobd_start_seconds_count 2" in text
    assert "jobd_jobs_started_total 2" in text


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def test_a_daemon_serves_its_metrics(certs: Certs, tmp_path: Path) -> None:
    daemon = Daemon(certs, tmp_path / "state", "--metrics", "127.0.0.1:0").start()
    try:
        found = [re.search(r"metrics on http://127\.0\.0\.1:(\d+)/", e["msg"])
                 for e in daemon.entries()]  # fmt: skip
        port = int(next(m for m in found if m).group(1))

        async def scenario(stub: Any) -> None:
            job_id = await start(stub, ["echo", "hello"])
            await collect(stub, job_id)
            await expect_status(Status.NOT_FOUND, stub.GetJob(pb.GetJobRequest(job_id="nope")))

        daemon.run("client_0", scenario)
        status, body = scrape(port)
        assert status == "HTTP/1.1 200 OK"
        for line in (
            "jobd_jobs_started_total 1",
            'jobd_jobs_finished_total{outcome="exited"} 1',
            'jobd_rpcs_total{method="StartJob",status="OK"} 1',
            'jobd_rpcs_total{method="GetJob",status="NOT_FOUND"} 1',
            "jobd_streamed_bytes_total 6",
            "jobd_jobs_running 0",
            "jobd_start_seconds_count 1",
        ):
            assert line in body.splitlines(), line
        assert scrape(port, "/other")[0] == "HTTP/1.1 404 Not Found"
    finally:
        assert daemon.stop() == 0
