"""Client certificates outside their validity period are refused at the TLS handshake.

A small PKI of our own (we need the CA to issue certificates with chosen dates): a trusted
client certificate that has expired and one that is not valid yet are both refused by the
running daemon and start nothing; a current one from the same CA is accepted.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from harness import Certs, Daemon, new_ca
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb
from jobd.v1.jobs_grpc import JobServiceStub

pytestmark = pytest.mark.e2e

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
# name of the client file -> (not_before, not_after); all carry the admin identity client_0.
PERIODS = {
    "client_0": (NOW - DAY, NOW + 30 * DAY),
    "expired": (NOW - 30 * DAY, NOW - DAY),
    "not-yet-valid": (NOW + DAY, NOW + 30 * DAY),
}


def make_pki(directory: Path) -> Certs:
    ca = new_ca(directory)
    for name, (not_before, not_after) in PERIODS.items():
        cert = ca.issue_cert(
            "client_0@jobd.test", common_name="client_0", not_before=not_before, not_after=not_after
        )
        cert.private_key_and_cert_chain_pem.write_to_path(str(directory / f"{name}.pem"))
    return Certs(directory, directory / "ca.crt", directory / "server.pem")


@pytest.fixture(scope="module")
def pki_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("validity")
    (base / "pki").mkdir()
    d = Daemon(make_pki(base / "pki"), base / "state").start()
    try:
        yield d
        stopped = d.run("client_0", stop_all)
        assert all(job.state == pb.JOB_STATE_FINISHED for job in stopped)
    finally:
        code = d.stop()
    d.check_exit(code)


async def stop_all(stub: Any) -> list[pb.Job]:
    for job in (await stub.ListJobs(pb.ListJobsRequest())).jobs:
        if job.state != pb.JOB_STATE_FINISHED:
            await stub.StopJob(pb.StopJobRequest(job_id=job.id))
    return list((await stub.ListJobs(pb.ListJobsRequest())).jobs)


def start_with(daemon: Daemon, client: str, argv: list[str]) -> str:
    """StartJob over a connection that presents ``client``.pem; the new job's id."""

    async def attempt() -> str:
        ctx = client_context(daemon.certs.ca, daemon.certs.client(client))
        channel = Channel("127.0.0.1", daemon.port, ssl=ctx)
        try:
            reply = await JobServiceStub(channel).StartJob(pb.StartJobRequest(argv=argv))
            return str(reply.job_id)
        finally:
            channel.close()

    return asyncio.run(asyncio.wait_for(attempt(), 30))


def jobs_with_argv(daemon: Daemon, argv: list[str]) -> list[pb.Job]:
    async def scenario(stub: Any) -> list[pb.Job]:
        return [j for j in (await stub.ListJobs(pb.ListJobsRequest())).jobs if j.argv == argv]

    return daemon.run("client_0", scenario)


def test_the_certificates_have_the_intended_periods(pki_daemon: Daemon) -> None:
    daemon = pki_daemon
    from cryptography import x509

    for name, (not_before, not_after) in PERIODS.items():
        cert = x509.load_pem_x509_certificates(daemon.certs.client(name).read_bytes())[0]
        # X.509 times have whole seconds.
        assert abs(cert.not_valid_before_utc - not_before) < datetime.timedelta(seconds=1)
        assert abs(cert.not_valid_after_utc - not_after) < datetime.timedelta(seconds=1)
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "client_0"


@pytest.mark.parametrize("client", ["expired", "not-yet-valid"])
def test_a_certificate_outside_its_validity_is_refused(pki_daemon: Daemon, client: str) -> None:
    daemon = pki_daemon
    argv = ["echo", f"started with the {client} certificate"]
    with pytest.raises((ssl.SSLError, ConnectionError, StreamTerminatedError)):
        start_with(daemon, client, argv)
    assert jobs_with_argv(daemon, argv) == []
    assert daemon.proc is not None and daemon.proc.poll() is None  # still serving


def test_a_current_certificate_from_the_same_ca_is_accepted(pki_daemon: Daemon) -> None:
    daemon = pki_daemon
    argv = ["echo", "started with the current certificate"]
    job_id = start_with(daemon, "client_0", argv)
    started = jobs_with_argv(daemon, argv)
    assert [j.id for j in started] == [job_id]
    assert started[0].owner == "client_0"
