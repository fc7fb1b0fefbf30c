"""Revoked client certificates are refused at the handshake; SIGHUP reloads the CRL."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from harness import Certs, Daemon, wait_until
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command"),
]

GEN = Path(__file__).resolve().parents[2] / "ca" / "gen.sh"


def gen(*args: str) -> None:
    subprocess.run(["sh", str(GEN), *args], check=True, capture_output=True, timeout=60)


def accepted(daemon: Daemon, who: str) -> bool:
    async def attempt() -> None:
        ctx = client_context(daemon.certs.ca, daemon.certs.client(who))
        channel = Channel("127.0.0.1", daemon.port, ssl=ctx)
        try:
            await JobServiceStub(channel).ListJobs(pb.ListJobsRequest())
        finally:
            channel.close()

    try:
        asyncio.run(asyncio.wait_for(attempt(), 30))
    except (ssl.SSLError, ConnectionError, StreamTerminatedError):
        return False
    return True


def test_revoked_clients_are_refused_and_sighup_reloads_the_crl(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    gen(str(pki))
    gen("--client", "client_2", str(pki))
    gen("--revoke", "client_1", str(pki))
    certs = Certs(pki, pki / "ca.crt", pki / "server.pem")
    daemon = Daemon(certs, tmp_path / "state", "--crl", str(pki / "ca.crl")).start()
    try:
        assert not accepted(daemon, "client_1")
        assert accepted(daemon, "client_0")

        gen("--revoke", "client_0", str(pki))
        assert accepted(daemon, "client_0")  # until the daemon reloads
        daemon.signal(signal.SIGHUP)
        assert wait_until(lambda: any("reloaded the CRL" in e["msg"] for e in daemon.entries()))
        assert not accepted(daemon, "client_0")
        assert not accepted(daemon, "client_1")
        assert accepted(daemon, "client_2")
    finally:
        assert daemon.stop() == 0


def test_a_missing_crl_stops_the_start(tmp_path: Path, certs: Any) -> None:
    result = subprocess.run(
        [*Daemon(certs, tmp_path / "state").argv, "--crl", str(tmp_path / "nope.crl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot load CRL {tmp_path / 'nope.crl'}" in result.stderr


def test_revocation_reaches_a_connection_opened_before_it(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    gen(str(pki))
    gen("--client", "client_2", str(pki))
    gen("--revoke", "client_2", str(pki))  # a CRL to start with, revoking someone else
    certs = Certs(pki, pki / "ca.crt", pki / "server.pem")
    daemon = Daemon(certs, tmp_path / "state", "--crl", str(pki / "ca.crl")).start()

    async def scenario() -> tuple[bool, float, bool]:
        ctx = client_context(certs.ca, certs.client("client_1"))
        channel = Channel("127.0.0.1", daemon.port, ssl=ctx)
        stub = JobServiceStub(channel)
        try:
            await stub.ListJobs(pb.ListJobsRequest())  # the connection is open and works
            job = await stub.StartJob(pb.StartJobRequest(argv=["sleep", "300"]))
            follow = asyncio.ensure_future(stub.StreamOutput(pb.StreamOutputRequest(
                job_id=job.job_id)))  # a call in flight on that connection
            await asyncio.sleep(0.2)
            gen("--revoke", "client_1", str(pki))
            daemon.signal(signal.SIGHUP)
            begin = asyncio.get_running_loop().time()
            refused = False
            while asyncio.get_running_loop().time() - begin < 5:
                try:
                    await stub.ListJobs(pb.ListJobsRequest())
                except Exception:
                    refused = True
                    break
                await asyncio.sleep(0.02)
            took = asyncio.get_running_loop().time() - begin
            with contextlib.suppress(Exception):
                await asyncio.wait_for(follow, 5)
            return refused, took, follow.done()
        finally:
            channel.close()

    try:
        refused, took, follow_ended = asyncio.run(scenario())
        assert refused and took < 1.0, took
        assert follow_ended  # the call in flight went with its connection
        assert any("certificate has been revoked" in e["msg"] for e in daemon.entries())
    finally:
        assert daemon.stop() == 0
