"""The running daemon accepts only TLS 1.3 with AES-256-GCM and a client certificate it trusts."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from harness import Daemon
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub

pytestmark = pytest.mark.e2e

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def s_client(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[bytes]:
    pem = str(daemon.certs.client("client_0"))
    return subprocess.run(
        ["openssl", "s_client", "-connect", daemon.server, "-CAfile", str(daemon.certs.ca),
         "-cert", pem, "-key", pem, "-alpn", "h2", *args],
        input=b"", capture_output=True, timeout=30,
    )  # fmt: skip


@needs_openssl
def test_the_pinned_suite_is_accepted(daemon: Daemon) -> None:
    result = s_client(daemon, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert result.returncode == 0, result.stderr
    assert b"TLSv1.3" in result.stdout and b"TLS_AES_256_GCM_SHA384" in result.stdout


@needs_openssl
@pytest.mark.parametrize(
    "args",
    [
        ["-tls1_2"],
        ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
        ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
    ],
    ids=["tls1.2", "aes128", "chacha20"],
)
def test_other_versions_and_suites_are_refused(daemon: Daemon, args: list[str]) -> None:
    result = s_client(daemon, *args)
    assert result.returncode != 0
    assert b"Cipher is" not in result.stdout or b"Cipher is (NONE)" in result.stdout


def _context_without_client_cert(daemon: Daemon) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(daemon.certs.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    return ctx


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA"])
def test_untrusted_clients_are_refused(daemon: Daemon, client: str) -> None:
    if client == "no certificate":
        ctx = _context_without_client_cert(daemon)
    else:
        ctx = client_context(daemon.certs.ca, daemon.certs.dir / "foreign.pem")

    async def attempt() -> None:
        channel = Channel("127.0.0.1", daemon.port, ssl=ctx)
        try:
            await JobServiceStub(channel).StartJob(pb.StartJobRequest(argv=["true"]))
        finally:
            channel.close()

    with pytest.raises((ssl.SSLError, ConnectionError, StreamTerminatedError)):
        asyncio.run(asyncio.wait_for(attempt(), 30))

    async def nothing_started(stub: Any) -> None:
        assert list((await stub.ListJobs(pb.ListJobsRequest())).jobs) == []

    daemon.run("client_0", nothing_started)
