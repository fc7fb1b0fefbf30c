"""[connections] on a real daemon: the handshake deadline, idle connections, the caps on open
connections (in total and per client address) and the concurrent-streams limit.

Floods come from 127.0.0.2 and 127.0.0.3 - still loopback - so that 127.0.0.1 can be "another
client". Each test bounds its waits generously; none sleeps to make a condition true.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib import Status
from grpclib.exceptions import StreamTerminatedError
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes

from harness import Certs, Daemon, collect, start, stop, wait_until
from jobd.api.tls import client_context
from jobd.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.e2e

# Far above any wait below that expects something to happen sooner.
LONG = 120
# Generous upper bound for anything the daemon should do within a second.
SOON = 20.0


@contextlib.contextmanager
def running(certs: Certs, tmp_path: Path, **settings: object) -> Iterator[Daemon]:
    """A daemon with ``[connections]`` set (and metrics on), checked on the way out."""
    table = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items())
    daemon = Daemon(certs, tmp_path / "state", "--metrics", "127.0.0.1:0",
                    config_extra="[connections]\n" + table).start()  # fmt: skip
    try:
        yield daemon
    finally:
        code = daemon.stop()
    daemon.check_exit(code)


# A GetJob call's request headers, for tests that speak HTTP/2 themselves.
GET_JOB_HEADERS = [(":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1"),
                   (":path", "/jobd.v1.JobService/GetJob"), ("content-type", "application/grpc"),
                   ("te", "trailers")]  # fmt: skip


def h2_client() -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    return client


def raw(daemon: Daemon, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to the daemon from ``source`` that says nothing."""
    return socket.create_connection(("127.0.0.1", daemon.port), timeout=LONG,
                                    source_address=(source, 0))


def tls(daemon: Daemon, source: str = "127.0.0.1", who: str = "client_1") -> ssl.SSLSocket:
    """A TLS connection (handshake done) from ``source`` as ``who``."""
    ctx = client_context(daemon.certs.ca, daemon.certs.client(who))
    return ctx.wrap_socket(raw(daemon, source), server_hostname="127.0.0.1")


def wait_closed(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Read until the daemon closes the connection: (seconds it took, what arrived before)."""
    began = time.monotonic()
    sock.settimeout(timeout)
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return time.monotonic() - began, bytes(data)


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(LONG)


def metric(daemon: Daemon, name: str) -> int:
    ports = [re.search(r"metrics on http://127\.0\.0\.1:(\d+)/", e["msg"])
             for e in daemon.entries()]  # fmt: skip
    port = int(next(m for m in ports if m).group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    return 0


def log_lines(daemon: Daemon, text: str) -> list[str]:
    return [e["msg"] for e in daemon.entries() if text in e["msg"]]


async def start_and_get(stub: Any) -> None:
    job_id = await start(stub, ["true"])
    reply = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert reply.id == job_id


def test_a_connection_without_a_handshake_is_dropped(certs: Certs, tmp_path: Path) -> None:
    with running(certs, tmp_path, handshake_timeout=0.5) as daemon, raw(daemon) as silent:
        took, data = wait_closed(silent, LONG)
        assert data == b""
        assert 0.45 <= took < SOON, took
        assert wait_until(lambda: metric(
            daemon, 'jobd_connections_dropped_total{reason="handshake_timeout"}') == 1, SOON)
        assert wait_until(lambda: metric(daemon, "jobd_connections_open") == 0, SOON)
        daemon.run("client_1", start_and_get)  # the deadline is for the handshake only


def test_a_started_handshake_that_stalls_is_dropped(certs: Certs, tmp_path: Path) -> None:
    with running(certs, tmp_path, handshake_timeout=0.5) as daemon, raw(daemon) as stalled:
        # The first bytes of a ClientHello, and then nothing.
        stalled.sendall(bytes.fromhex("16030102000100"))
        took, _ = wait_closed(stalled, LONG)
        assert 0.45 <= took < SOON, took


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(
    certs: Certs, tmp_path: Path
) -> None:
    with running(certs, tmp_path, idle_timeout=0.5) as daemon:
        with tls(daemon) as idle:
            client = h2_client()
            idle.sendall(client.data_to_send())
            took, data = wait_closed(idle, LONG)
        assert 0.45 <= took < SOON, took
        events = client.receive_data(data)
        assert [e.error_code for e in events if isinstance(e, ConnectionTerminated)] == [
            ErrorCodes.NO_ERROR
        ]  # GOAWAY: no call was lost, reconnect at will

        async def scenario(stub: Any) -> None:
            # A call in flight for longer than idle_timeout keeps its connection.
            job_id = await start(stub, ["sh", "-c", "sleep 1.5; echo done"])
            out, _, final, _ = await collect(stub, job_id)
            assert (out, final.state) == (b"done\n", pb.JOB_STATE_FINISHED)
            # Idle until the daemon has closed it; grpclib's channel just connects again.
            dropped = 'jobd_connections_dropped_total{reason="idle"}'
            assert await asyncio.to_thread(
                wait_until, lambda: metric(daemon, dropped) >= 2, SOON
            )
            reply = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
            assert reply.id == job_id

        daemon.run("client_1", scenario)
        assert metric(daemon, 'jobd_connections_dropped_total{reason="idle"}') >= 2


def test_one_address_past_max_per_peer_does_not_stop_another(
    certs: Certs, tmp_path: Path
) -> None:
    with running(certs, tmp_path, max_per_peer=3, handshake_timeout=LONG) as daemon, \
            contextlib.ExitStack() as stack:  # fmt: skip
        flood = [stack.enter_context(raw(daemon, "127.0.0.2")) for _ in range(3)]
        refused = [stack.enter_context(raw(daemon, "127.0.0.2")) for _ in range(3)]
        for sock in refused:
            took, data = wait_closed(sock, LONG)
            assert data == b"" and took < SOON, took  # at once, not after the handshake timeout
        assert all(still_open(sock) for sock in flood)

        daemon.run("client_1", start_and_get)  # from 127.0.0.1

        assert wait_until(lambda: bool(log_lines(daemon, "refused a connection from 127.0.0.2")))
        assert log_lines(daemon, "refused a connection") == [
            "refused a connection from 127.0.0.2: 3 connections from this address are open "
            "([connections] max_per_peer = 3)"
        ]  # once, not once per refusal
        assert metric(daemon, 'jobd_connections_refused_total{limit="max_per_peer"}') == 3

        # Its connections gone, the address is served again.
        for sock in flood:
            sock.close()
        assert wait_until(lambda: metric(daemon, "jobd_connections_open") == 0, SOON)
        with tls(daemon, "127.0.0.2") as again:
            assert again.version() == "TLSv1.3"


def test_the_total_cap(certs: Certs, tmp_path: Path) -> None:
    with running(certs, tmp_path, max=3, handshake_timeout=LONG) as daemon, \
            contextlib.ExitStack() as stack:  # fmt: skip
        flood = [stack.enter_context(raw(daemon, source))
                 for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]  # fmt: skip
        for source in ("127.0.0.3", "127.0.0.1"):
            with raw(daemon, source) as sock:
                took, data = wait_closed(sock, LONG)
                assert data == b"" and took < SOON, took
        with pytest.raises((ConnectionError, ssl.SSLError, StreamTerminatedError, OSError)):
            daemon.run("client_1", start_and_get, timeout=SOON)
        assert metric(daemon, 'jobd_connections_refused_total{limit="max"}') == 3
        assert metric(daemon, "jobd_connections_open") == 3
        assert len(log_lines(daemon, "connections are open ([connections] max = 3)")) == 1

        flood.pop().close()
        assert wait_until(lambda: metric(daemon, "jobd_connections_open") == 2, SOON)
        daemon.run("client_1", start_and_get)
        # Two connections are still in their handshake as the daemon stops: it must not care.


def test_max_streams_is_advertised_and_enforced(certs: Certs, tmp_path: Path) -> None:
    with running(certs, tmp_path, max_streams=2) as daemon, tls(daemon) as sock:
        client = h2_client()
        for stream_id in (1, 3, 5):  # before it has seen our SETTINGS: a client that ignores them
            client.send_headers(stream_id, GET_JOB_HEADERS)
        sock.sendall(client.data_to_send())

        advertised: list[int] = []
        resets: dict[int, int] = {}
        trailers: dict[int, dict[bytes, bytes]] = {}
        ended: set[int] = set()

        def read_until(done: Any) -> None:
            while not done():
                data = sock.recv(65536)
                assert data, "the daemon closed the connection"
                for event in client.receive_data(data):
                    if isinstance(event, RemoteSettingsChanged):
                        changed = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
                        if changed is not None:
                            advertised.append(changed.new_value)
                    elif isinstance(event, StreamReset):
                        resets[event.stream_id] = event.error_code
                    elif isinstance(event, ResponseReceived | TrailersReceived):
                        # An error is "trailers only": grpc-status in the response headers.
                        trailers.setdefault(event.stream_id, {}).update(event.headers)
                    elif isinstance(event, StreamEnded):
                        ended.add(event.stream_id)
                sock.sendall(client.data_to_send())

        read_until(lambda: 5 in resets and 2 in advertised)
        assert resets == {5: ErrorCodes.REFUSED_STREAM}
        assert client.remote_settings.max_concurrent_streams == 2

        # The two streams let in are served as usual.
        message = pb.GetJobRequest(job_id="0" * 32).SerializeToString()
        for stream_id in (1, 3):
            client.send_data(stream_id, b"\0" + len(message).to_bytes(4, "big") + message,
                             end_stream=True)
        sock.sendall(client.data_to_send())
        read_until(lambda: {1, 3} <= ended)
        for stream_id in (1, 3):
            assert trailers[stream_id][b"grpc-status"] == str(Status.NOT_FOUND.value).encode()


def test_a_well_behaved_client_queues_calls_past_max_streams(
    certs: Certs, tmp_path: Path
) -> None:
    with running(certs, tmp_path, max_streams=2) as daemon:

        async def scenario(stub: Any) -> None:
            job_id = await start(stub, ["sh", "-c", "echo ready; exec sleep 300"])
            release = [asyncio.Event(), asyncio.Event()]

            async def hold(opened: asyncio.Event, done: asyncio.Event) -> None:
                async with stub.StreamOutput.open() as stream:
                    await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
                    await stream.recv_message()
                    opened.set()
                    await done.wait()
                    await stream.cancel()

            opened = [asyncio.Event(), asyncio.Event()]
            holders = [asyncio.ensure_future(hold(o, r))
                       for o, r in zip(opened, release, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), SOON)
            third = asyncio.ensure_future(stub.GetJob(pb.GetJobRequest(job_id=job_id)))
            finished, _ = await asyncio.wait({third}, timeout=1.0)
            assert not finished, "a third call ran while two streams were open"
            release[0].set()
            reply = await asyncio.wait_for(third, SOON)
            assert reply.id == job_id
            release[1].set()
            await asyncio.wait_for(asyncio.gather(*holders), SOON)
            await stop(stub, job_id)

        daemon.run("client_1", scenario)


def test_a_call_whose_request_never_comes_is_ended(certs: Certs, tmp_path: Path) -> None:
    """A stream opened with its headers and then nothing holds no handler for long."""
    with running(certs, tmp_path, request_timeout=0.5) as daemon, tls(daemon) as sock:
        client = h2_client()
        client.send_headers(1, GET_JOB_HEADERS)  # and never the request message
        sock.sendall(client.data_to_send())
        began = time.monotonic()
        status: dict[bytes, bytes] = {}
        ended = False
        while not ended:
            data = sock.recv(65536)
            assert data, "the daemon closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, ResponseReceived | TrailersReceived):
                    status.update(event.headers)
                elif isinstance(event, StreamEnded | StreamReset):
                    ended = True
            sock.sendall(client.data_to_send())
        elapsed = time.monotonic() - began
        assert status[b"grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value).encode()
        assert b"did not arrive within 0.5 s" in status[b"grpc-message"]
        assert 0.4 <= elapsed < SOON
        daemon.run("client_1", start_and_get)  # and the daemon serves on
