"""The service boundary: identity from the TLS session only, bugs logged and contained."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from fake_tls import FakeSSL
from grpclib import GRPCError, Status

from jobd.api.peer import CALLER, PeerCertificate
from jobd.api.service import JobService, identity_of
from jobd.jobs.manager import JobManager
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import Store
from jobd.model.errors import PermissionDenied
from jobd.policy.auth import Role
from jobd.v1 import jobs_pb2 as pb


class FakeStream:
    def __init__(self, request: Any) -> None:
        self.request = request
        self.sent: list[Any] = []

    async def recv_message(self) -> Any:
        return self.request

    async def send_message(self, message: Any) -> None:
        self.sent.append(message)


async def as_caller(ssl_object: FakeSSL, handler: Any, stream: FakeStream) -> None:
    """``handler(stream)`` as a call on a connection whose TLS object is ``ssl_object``."""
    CALLER.set(PeerCertificate.of(ssl_object))
    await handler(stream)


def _identity(ssl_object: FakeSSL | None) -> Any:
    return identity_of({"client_0": Role.ADMIN}, frozenset(), PeerCertificate.of(ssl_object))


def test_identity_comes_from_the_certificate_only() -> None:
    assert _identity(FakeSSL("client_0")).role is Role.ADMIN
    assert _identity(FakeSSL("nobody")).role is None
    with pytest.raises(PermissionDenied, match="no TLS session"):
        _identity(None)
    with pytest.raises(PermissionDenied, match=r"expected TLSv1\.3"):
        _identity(FakeSSL("client_0", "TLSv1.2"))


def test_a_connection_s_certificate_is_read_once_and_its_role_on_every_call() -> None:
    connection, other = FakeSSL("client_0"), FakeSSL("client_1")
    roles = {"client_0": Role.ADMIN, "client_1": Role.USER}
    # What jobd.api.connections does once per connection, after the handshake.
    first, second = PeerCertificate.of(connection), PeerCertificate.of(other)

    assert identity_of(roles, frozenset(), first).role is Role.ADMIN
    assert identity_of(roles, frozenset(), second).name == "client_1"
    roles["client_0"] = Role.USER  # a reload between two calls on one connection
    assert identity_of(roles, frozenset(), first).role is Role.USER
    assert (connection.reads, other.reads) == (1, 1)
    # Revoked between two calls: refused from the next one on.
    with pytest.raises(PermissionDenied, match="revoked"):
        identity_of(roles, frozenset({77}), PeerCertificate("client_0", 77))

    refused = PeerCertificate.of(FakeSSL("client_0", "TLSv1.2"))
    for _ in range(2):  # a refused session stays refused, call after call
        with pytest.raises(PermissionDenied, match=r"expected TLSv1\.3"):
            identity_of(roles, frozenset(), refused)
    with pytest.raises(PermissionDenied, match="no TLS session"):
        identity_of(roles, frozenset(), None)  # a call outside any connection


async def test_a_bug_in_a_handler_is_logged_and_answered_internal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path)
    state.claim()
    store = Store(state.database)
    manager = JobManager(state, store)

    def broken(job_id: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(manager, "find", broken)
    service = JobService(manager)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        stream = FakeStream(pb.GetJobRequest(job_id="0" * 36))
        with caplog.at_level(logging.ERROR), pytest.raises(GRPCError) as info:
            await trio_asyncio.aio_as_trio(as_caller)(FakeSSL("client_0"), service.GetJob, stream)
        assert info.value.status == Status.INTERNAL
        assert "boom" not in str(info.value.message)  # internals stay in the daemon's log
        assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)

        # The service still answers the next call.
        ok = FakeStream(pb.ListJobsRequest())
        await trio_asyncio.aio_as_trio(as_caller)(FakeSSL("client_0"), service.ListJobs, ok)
        assert ok.sent == [pb.ListJobsResponse()]
        nursery.cancel_scope.cancel()
    store.close()
    state.release()


async def test_a_page_over_its_byte_bound_is_cut_short_and_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers_unit import open_manager

    from jobd.model import bounds
    from jobd.model.job import JobSpec
    from jobd.policy.auth import Identity

    async with open_manager(tmp_path / "state") as manager:
        for i in range(5):
            await manager.wait_finished(await manager.start("alice", JobSpec(("true", str(i)))))
        service = JobService(manager)
        alice = Identity("alice", Role.USER)
        whole = await service._list(alice, pb.ListJobsRequest())
        assert len(whole.jobs) == 5 and not whole.next_page_token
        one = whole.jobs[0].ByteSize()
        monkeypatch.setattr(bounds, "MAX_PAGE_BYTES", int(one * 2.5))  # room for two
        seen, token = [], ""
        while True:
            page = await service._list(alice, pb.ListJobsRequest(page_token=token))
            assert 1 <= len(page.jobs) <= 2
            seen += [j.id for j in page.jobs]
            token = page.next_page_token
            if not token:
                break
        assert seen == [j.id for j in whole.jobs]  # all of them, each once, in order
