"""A raw HTTP/2 client over jobd's mutual TLS, for what a well-behaved gRPC client never sends:
truncated gRPC messages, empty DATA frames, streams reset as soon as they are opened.

Blocking sockets and h2's state machine, one connection at a time; every read has a timeout.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from jobd.api.tls import client_context

SERVICE = "/jobd.v1.JobService/"
TIMEOUT = 10.0


@dataclass
class Answer:
    status: int | None = None  # grpc-status, None when the stream was reset or never ended
    message: str = ""
    reset: bool = False
    data: bytes = b""


@dataclass
class RawClient:
    sock: ssl.SSLSocket
    conn: h2.connection.H2Connection
    answers: dict[int, Answer] = field(default_factory=dict)
    goaway: bool = False
    closed: bool = False

    @classmethod
    def connect(cls, port: int, ca: Path, cert: Path) -> RawClient:
        ctx = client_context(ca, cert)
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        client = cls(sock, conn)
        client.flush()
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:  # the server closed the connection (or stopped reading)
                self.closed = True

    def headers(self, rpc: str) -> list[tuple[str, str]]:
        return [(":method", "POST"), (":scheme", "https"), (":path", SERVICE + rpc),
                (":authority", "localhost"), ("content-type", "application/grpc+proto"),
                ("te", "trailers")]  # fmt: skip

    def call(self, rpc: str, frames: list[bytes], end: bool = True) -> int:
        """A stream with ``rpc``'s headers, then each of ``frames`` as one DATA frame (an empty
        one included); END_STREAM on the last (or on the headers when there is none)."""
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, self.headers(rpc), end_stream=end and not frames)
        for i, frame in enumerate(frames):
            self.conn.send_data(stream, frame, end_stream=end and i == len(frames) - 1)
        self.flush()
        self.answers[stream] = Answer()
        return stream

    def open_and_reset(self, rpc: str, payload: bytes = b"") -> None:
        """HEADERS (and a complete request), then RST_STREAM at once: the rapid reset."""
        if self.closed:
            raise ConnectionResetError("the server closed the connection")
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, self.headers(rpc))
        if payload:
            self.conn.send_data(stream, payload)
        self.conn.reset_stream(stream, ErrorCodes.CANCEL)

    def pump(self, until: int | None = None) -> None:
        """Read and handle events until stream ``until`` has ended (or, with None, until the
        server has sent nothing for a moment)."""
        while until is None or not self._done(until):
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if until is None:
                    return
                raise
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                return
            for event in events:
                self._handle(event)
            self.flush()

    def _done(self, stream: int) -> bool:
        answer = self.answers[stream]
        return self.closed or answer.reset or answer.status is not None

    def _handle(self, event: object) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
        stream = getattr(event, "stream_id", 0)
        answer = self.answers.get(stream)
        if answer is None:
            return
        if isinstance(event, h2.events.DataReceived):
            answer.data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
        elif isinstance(event, h2.events.StreamReset):
            answer.reset = True
        elif isinstance(event, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
            fields = {_text(k): _text(v) for k, v in event.headers}
            if "grpc-status" in fields:
                answer.status = int(fields["grpc-status"])
                answer.message = fields.get("grpc-message", "")

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        self.sock.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def stalled(port: int, ca: Path, cert: Path) -> RawClient:
    """A client that opens streams and never reads from them: every stream's receive window is
    0, and it sends no WINDOW_UPDATE."""
    from h2.settings import SettingCodes

    client = RawClient.connect(port, ca, cert)
    client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    return client


@contextlib.contextmanager
def stalled_streams(port: int, ca: Path, cert: Path, request: bytes, window: int,
                    connections: int = 2, streams: int = 100) -> Iterator[None]:
    """``connections`` stalled clients, each with ``streams`` calls of StreamOutput
    (``request``: the whole gRPC message), each stream's window opened by ``window`` bytes;
    closed on leaving."""
    clients = [stalled(port, ca, cert) for _ in range(connections)]
    try:
        for client in clients:
            for _ in range(streams):
                stream = client.call("StreamOutput", [request])
                if window:
                    client.conn.increment_flow_control_window(window, stream)
            client.flush()
        yield
    finally:
        for client in clients:
            client.close()
