"""Connections: the TLS handshake deadline, caps on open connections, the HTTP/2 stream limit
and idle connections, in front of grpclib's server (the ``[connections]`` table).

grpclib's ``Server.start`` calls asyncio's ``create_server`` without ``ssl_handshake_timeout``
(asyncio's default: 60 s) and offers no hook before the handshake, where a connection's peer
address is known but no TLS work has been done. So jobd accepts connections itself, in trio:
each new connection is counted against ``max`` and ``max_per_peer`` before a byte of TLS is
read and, past either cap, reset at once. Otherwise its socket goes to asyncio's public
``loop.connect_accepted_socket(..., ssl=..., ssl_handshake_timeout=...)`` with the protocol
grpclib would have used, wrapped. A connection holds its place in the counts until it is gone,
handshake or not, so one client's flood of handshakes or half-open connections uses up only its
own share.

The wrapper advertises ``SETTINGS_MAX_CONCURRENT_STREAMS``: clients queue calls past it, h2
refuses streams past it once the client has acknowledged it, and before that the wrapper
refuses them itself (``RST_STREAM``, ``REFUSED_STREAM``). It counts the calls in flight
through grpclib's per-connection handler and closes a connection that has had none for
``idle_timeout`` (``GOAWAY``, then the TLS close).

A stream the client resets is released at once, whether or not its handler ever ran (grpclib
releases a stream only from its handler's ``finally``, which a task cancelled before its first
step never reaches: its table of streams grew with every HEADERS-then-RST_STREAM, the "rapid
reset" of CVE-2023-44487). Resets are counted per connection: past ``max_resets`` in ten
seconds (a token bucket, as the HTTP/2 servers patched for that CVE do) the connection gets
``GOAWAY`` (``ENHANCE_YOUR_CALM``) and is closed. A closed connection's handler is dropped from
grpclib's server as soon as its calls have finished, not when ten more connections arrive.

grpclib's internals (the protocol its server makes for each connection, the handlers it keeps,
the h2 connection for SETTINGS and GOAWAY, a stream's window) are reached through
``jobd.api.grpclib_private``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import trio
import trio_asyncio
from grpclib.protocol import AbstractHandler, H2Protocol
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler, Server
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes

from jobd.api import grpclib_private
from jobd.api.metrics import Metrics
from jobd.api.peer import CALLER, PeerCertificate
from jobd.policy.connections import ConnectionLimits

log = logging.getLogger(__name__)

# One line per peer (and one for the total cap) at most this often; the metrics count them all.
LOG_INTERVAL = 60.0
# accept() fails while descriptors or memory are short; retry after this, as trio's
# serve_listeners does, rather than spin on a socket that stays readable.
ACCEPT_RETRY = 0.1
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

Address = tuple[str, int] | tuple[str, int, int, int]


RESET_WINDOW = 10.0  # seconds: max_resets is the bucket, max_resets / RESET_WINDOW the refill
FEED_SLICE = 16384  # bytes handed to h2 at a time


class Gate:
    """The connections open now, in total and per peer address, and which cap a new one would
    break. Handshaking connections count: that is what stops a flood of them."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self._peers: Counter[str] = Counter()

    def admit(self, peer: str) -> str | None:
        """Count a new connection from ``peer`` and return None, or return the name of the cap
        it would break (and count nothing)."""
        if self.open >= self.limits.max:
            return "max"
        if self._peers[peer] >= self.limits.max_per_peer:
            return "max_per_peer"
        self.open += 1
        self._peers[peer] += 1
        return None

    def release(self, peer: str) -> None:
        self.open -= 1
        self._peers[peer] -= 1
        if self._peers[peer] <= 0:
            del self._peers[peer]

    def count(self, peer: str) -> int:
        return self._peers.get(peer, 0)


class LogThrottle:
    """At most one log line per key in any ``interval`` seconds; counts those held back.

    Keys are remembered for one interval; past ``keys`` of them (a flood from many addresses)
    new keys stay quiet until old ones expire, so memory stays bounded.
    """

    def __init__(self, interval: float = LOG_INTERVAL, keys: int = 4096,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._interval = interval
        self._keys = keys
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, held back since)

    def allow(self, key: str) -> int | None:
        """None: stay quiet. Otherwise log, saying how many were held back since last time."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= self._keys:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self._interval}
            if len(self._last) >= self._keys:
                return None
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]


def _h2_of(protocol: H2Protocol) -> H2Connection:
    return grpclib_private.h2_of(protocol.connection)


class _Calls(AbstractHandler):
    """grpclib's handler of one connection, behind a count of its calls in flight."""

    def __init__(self, inner: Handler, connection: _Connection) -> None:
        self.inner = inner
        self.open: set[H2Stream] = set()
        self._connection = connection
        self._release: dict[H2Stream, Callable[[], None]] = {}

    def accept(self, stream: H2Stream, headers: list[tuple[str, str]],
               release_stream: Callable[[], None]) -> None:
        if self._connection.condemned or len(self.open) >= self._connection.limits.max_streams:
            # Reached only before the client acknowledged our SETTINGS; after, h2 refuses the
            # stream itself. REFUSED_STREAM tells the client nothing was done: safe to retry.
            with contextlib.suppress(ProtocolError):  # the client may have reset it already
                stream.reset_nowait(ErrorCodes.REFUSED_STREAM)
            release_stream()
            return
        self.open.add(stream)
        self._connection.busy()

        def release() -> None:  # once: by the handler's finally, or at its reset
            if self._release.pop(stream, None) is not None:
                self._done(stream)
                release_stream()

        self._release[stream] = release
        # grpclib creates the call's task in accept(), which copies this context: its handler
        # sees the connection's certificate without asking the transport again.
        token = CALLER.set(self._connection.certificate)
        try:
            self.inner.accept(stream, headers, release)
        finally:
            CALLER.reset(token)

    def cancel(self, stream: H2Stream) -> None:
        """The client reset the stream: cancel its handler and release it now. A task
        cancelled before its first step never runs its finally, so would never release it."""
        self.inner.cancel(stream)
        release = self._release.get(stream)
        if release is not None:
            release()
        self._connection.reset_by_client()

    def close(self) -> None:
        self.inner.close()

    def _done(self, stream: H2Stream) -> None:
        if stream in self.open:
            self.open.discard(stream)
            if not self.open:
                self._connection.idle()


def _idle_timer_fired(ref: weakref.ref[_Connection]) -> None:
    connection = ref()
    if connection is not None:
        connection.idle_timer_fired()


class _Connection(asyncio.Protocol):
    """One accepted connection: grpclib's protocol inside, the stream limit and the idle timer
    around it. asyncio calls it; the listener's trio task waits for ``lost``."""

    def __init__(self, protocol: H2Protocol, peer: str, limits: ConnectionLimits,
                 loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        handler = protocol.handler
        if not isinstance(handler, Handler):
            raise RuntimeError("grpclib's protocol holds no grpclib.server.Handler: "
                               "jobd/api/connections.py needs updating")
        self.peer = peer
        self.limits = limits
        self.calls = _Calls(handler, self)
        protocol.handler = self.calls  # read by its connection_made
        self.made = False
        self.lost = trio.Event()
        self._protocol = protocol
        self._loop = loop
        self._metrics = metrics
        self._transport: asyncio.Transport | None = None
        self._idle_timer_armed = False
        self._idle_since: float | None = None  # loop time of the last call's end; None: busy
        self._resets = float(limits.max_resets)  # the bucket's tokens
        self._resets_at = loop.time()
        self.condemned = False  # closing for its resets: no new call is started
        self.certificate = PeerCertificate.of(None)  # until the handshake is done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self._transport = cast(asyncio.Transport, transport)  # TLS: an asyncio.Transport
        # Called once the handshake is done: the client's certificate, once per connection.
        self.certificate = PeerCertificate.of(transport.get_extra_info("ssl_object"))
        self._protocol.connection_made(transport)
        # grpclib has just sent h2's default SETTINGS (100 streams); this one follows it.
        _h2_of(self._protocol).update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_streams}
        )
        self._protocol.connection.flush()
        self.idle()

    def data_received(self, data: bytes) -> None:
        if len(data) <= FEED_SLICE:
            self._protocol.data_received(data)
            return
        # A little at a time, so that one read of a flood (thousands of HEADERS and RST_STREAM
        # frames) cannot run far past the limit before the close.
        view = memoryview(data)
        for start in range(0, len(data), FEED_SLICE):
            if self.condemned:
                return
            self._protocol.data_received(bytes(view[start : start + FEED_SLICE]))

    def eof_received(self) -> bool | None:
        return self._protocol.eof_received()

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.busy()
        self._protocol.connection_lost(exc)
        # A connection lost while its writing was paused (a client that stopped reading, then
        # reset) leaves grpclib's write_ready cleared, and a cancelled call's handler waits on
        # it in its clean-up for ever: the daemon then never finished shutting down. Nothing
        # will be written to a connection that is gone, so no one waits to write to it.
        self._protocol.resume_writing()
        self.lost.set()

    def reset_by_client(self) -> None:
        """Count a stream reset; past the rate, close the connection (after this event)."""
        now = self._loop.time()
        rate = self.limits.max_resets / RESET_WINDOW
        self._resets = min(float(self.limits.max_resets),
                           self._resets + (now - self._resets_at) * rate) - 1  # fmt: skip
        self._resets_at = now
        if self._resets < 0 and not self.condemned and not self.lost.is_set():
            self.condemned = True  # closing: read no more of it
            self._loop.call_soon(self._close_for_resets)

    def _close_for_resets(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        log.warning("closing the connection from %s: more than %d stream resets in %g s "
                    "([connections] max_resets)", self.peer, self.limits.max_resets,
                    RESET_WINDOW, extra={"peer": self.peer})
        self._metrics.connections_dropped["resets"] += 1
        with contextlib.suppress(ProtocolError):
            _h2_of(self._protocol).close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self._protocol.connection.flush()
        transport.close()

    # One timer per connection, armed once and re-armed only when it fires early: never one
    # per call, cancelled at the next. trio-asyncio keeps a cancelled timer in its heap until
    # it is due, so a timer per call would hold ~200 bytes per call for idle_timeout (5 min),
    # and a client resetting streams would pile them up by the thousand.
    def busy(self) -> None:
        self._idle_since = None

    def idle(self) -> None:
        if self.lost.is_set():
            return
        self._idle_since = self._loop.time()
        if not self._idle_timer_armed:
            self._arm_idle_timer(self.limits.idle_timeout)

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_timer_armed = True
        # By weak reference: a connection that is gone is not kept by its pending timer.
        self._loop.call_later(delay, _idle_timer_fired, weakref.ref(self))

    def idle_timer_fired(self) -> None:
        self._idle_timer_armed = False
        if self._idle_since is None:  # busy: the next idle() arms it again
            return
        left = self._idle_since + self.limits.idle_timeout - self._loop.time()
        if left > 0:
            self._arm_idle_timer(left)
            return
        transport = self._transport
        if self.calls.open or transport is None or transport.is_closing():
            return
        log.debug("closing the connection from %s: no call for %g s", self.peer,
                  self.limits.idle_timeout, extra={"peer": self.peer})
        self._metrics.connections_dropped["idle"] += 1
        # GOAWAY first, so that the client knows no call was lost and simply reconnects.
        with contextlib.suppress(ProtocolError):
            _h2_of(self._protocol).close_connection()
            self._protocol.connection.flush()
        transport.close()

    def serial(self) -> int | None:
        """The serial number of the client's certificate (None before the handshake)."""
        return self.certificate.serial

    def close_now(self, why: str) -> None:
        """GOAWAY, cancel what runs on it, close."""
        log.warning("closing the connection from %s: %s", self.peer, why,
                    extra={"peer": self.peer})
        with contextlib.suppress(ProtocolError):
            _h2_of(self._protocol).close_connection()
            self._protocol.connection.flush()
        self.calls.close()
        if self._transport is not None:
            self._transport.close()

    def discard(self) -> None:
        """Whatever happened: drop the connection and let grpclib forget its handler."""
        self.busy()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()
        # Without a handshake grpclib never closes the handler, and its server keeps it.
        self.calls.close()


def _send_window(stream: Any) -> tuple[Any, Any, H2Connection]:
    h2_stream = grpclib_private.h2_stream_of(stream)
    return h2_stream, h2_stream.connection, grpclib_private.h2_of_stream(h2_stream)


def send_room_now(stream: Any) -> int:
    """The bytes a call's stream can send now without waiting for its client: 0 while its
    connection is not writable or its flow-control window is closed."""
    h2_stream, connection, h2 = _send_window(stream)
    if not connection.write_ready.is_set():
        return 0
    return max(0, _window(h2, h2_stream.id))


def _window(h2: H2Connection, stream_id: int) -> int:
    try:
        return int(h2.local_flow_control_window(stream_id))
    except StreamClosedError:
        return 0  # the client reset the stream, and grpclib is cancelling the call


async def send_room(stream: Any) -> int:
    """Wait until a call's stream can send without waiting for its client (the connection
    writable, its flow-control window open); the bytes the window takes now. grpclib keeps a
    message it cannot send whole in memory until the client reads it: asking first lets a
    stream whose client reads nothing hold no data at all."""
    h2_stream, connection, h2 = _send_window(stream)
    while True:
        await connection.write_ready.wait()
        window = _window(h2, h2_stream.id)
        if window > 0:
            return window
        h2_stream.window_updated.clear()
        await h2_stream.window_updated.wait()


class Listener:
    """Accepts connections for a grpclib server under trio-asyncio; see the module docstring.

    ``serve`` runs until cancelled (or until every connection is gone after
    ``stop_accepting``); ``close`` and ``wait_closed`` do for the calls in flight what
    grpclib's ``Server.close`` and ``wait_closed`` do for its own listener.
    """

    def __init__(self, server: Server, ssl_context: ssl.SSLContext, limits: ConnectionLimits,
                 metrics: Metrics) -> None:
        self.limits = limits
        self.gate = Gate(limits)
        self._factory = grpclib_private.server_protocol_factory(server)
        # At start-up rather than at the first connection: a grpclib that changed fails here.
        _Connection(self._factory(), "", limits, asyncio.get_event_loop(), metrics).discard()
        self._ssl = ssl_context
        self._metrics = metrics
        self._throttle = LogThrottle()
        self._connections: set[_Connection] = set()
        self._handlers = grpclib_private.server_handlers(server)
        self._listeners: list[trio.SocketListener] = []
        self._accepting = trio.CancelScope()
        metrics.connections_open = lambda: self.gate.open

    async def serve(self, host: str, port: int, *,
                    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen on ``host:port``; report the bound addresses when ready."""
        loop = asyncio.get_event_loop()
        try:
            self._listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
        task_status.started([listener.socket.getsockname() for listener in self._listeners])
        async with trio.open_nursery() as connections:
            with self._accepting:
                async with trio.open_nursery() as accepting:
                    for listener in self._listeners:
                        accepting.start_soon(self._accept, listener, connections, loop)
            self.stop_accepting()

    def stop_accepting(self) -> None:
        """Close the listening sockets; connections already accepted go on."""
        self._accepting.cancel()
        for listener in self._listeners:
            listener.socket.close()

    def close_revoked(self, revoked: frozenset[int]) -> int:
        """Close every connection whose client certificate is among ``revoked`` (GOAWAY, then
        the TLS connection itself, calls in flight included); how many were closed."""
        closed = 0
        for connection in list(self._connections):
            if connection.serial() in revoked:
                connection.close_now("its certificate has been revoked")
                closed += 1
        return closed

    def close(self) -> None:
        """Stop accepting and cancel every call in flight (the connections stay open)."""
        self.stop_accepting()
        for connection in self._connections:
            connection.calls.close()

    async def wait_closed(self) -> None:
        """Return when every call cancelled by ``close`` has finished."""
        for connection in list(self._connections):
            await trio_asyncio.aio_as_trio(connection.calls.inner.wait_closed)()

    async def _accept(self, listener: trio.SocketListener, connections: trio.Nursery,
                      loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                if self._throttle.allow("accept") is not None:
                    log.error("cannot accept connections: %s; retrying every %g s",
                              exc.strerror, ACCEPT_RETRY)
                await trio.sleep(ACCEPT_RETRY)
                continue
            sock = stream.socket
            try:
                peer = str(sock.getpeername()[0])
            except OSError:
                sock.close()  # the client has gone already
                continue
            refused = self.gate.admit(peer)
            if refused is not None:
                self._refuse(sock, peer, refused)
                continue
            accepted = socket.socket(fileno=sock.detach())
            connections.start_soon(self._connection, accepted, peer, loop)

    def _refuse(self, sock: trio.socket.SocketType, peer: str, cap: str) -> None:
        # A reset, not a FIN: nothing of a refused connection lingers here in TIME_WAIT.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self._metrics.connections_refused[cap] += 1
        held = self._throttle.allow(cap if cap == "max" else f"{cap} {peer}")
        if held is None:
            return
        more = f"; {held} more refused since the last such line" if held else ""
        if cap == "max":
            log.warning("refused a connection from %s: %d connections are open "
                        "([connections] max = %d)%s", peer, self.gate.open, self.limits.max,
                        more, extra={"peer": peer})
        else:
            log.warning("refused a connection from %s: %d connections from this address are "
                        "open ([connections] max_per_peer = %d)%s", peer, self.gate.count(peer),
                        self.limits.max_per_peer, more, extra={"peer": peer})

    async def _connection(self, sock: socket.socket, peer: str,
                          loop: asyncio.AbstractEventLoop) -> None:
        connection = _Connection(self._factory(), peer, self.limits, loop, self._metrics)
        self._connections.add(connection)
        try:
            # The transport owns the socket from here on, and closes it however this ends.
            await trio_asyncio.aio_as_trio(loop.connect_accepted_socket)(
                lambda: connection, sock, ssl=self._ssl,
                ssl_handshake_timeout=self.limits.handshake_timeout,
                ssl_shutdown_timeout=self.limits.handshake_timeout,
            )
            if connection.made:  # else the client left just as the handshake ended
                await connection.lost.wait()
        except OSError as exc:  # ssl.SSLError too
            # asyncio's handshake deadline raises ConnectionAbortedError; nothing else does.
            timeout = isinstance(exc, ConnectionAbortedError)
            self._metrics.connections_dropped[
                "handshake_timeout" if timeout else "handshake_failed"] += 1
            log.debug("TLS handshake with %s %s: %s", peer,
                      "timed out" if timeout else "failed", exc, extra={"peer": peer})
        except Exception:
            # One connection's bug must not end the others: say it loudly, go on.
            log.exception("connection from %s failed", peer, extra={"peer": peer})
        finally:
            self._connections.discard(connection)
            connection.discard()
            self.gate.release(peer)
            with trio.CancelScope(shield=True):  # its cancelled calls end at once
                await trio_asyncio.aio_as_trio(connection.calls.inner.wait_closed)()
            self._handlers.discard(connection.calls.inner)
