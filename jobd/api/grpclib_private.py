"""Every private name of grpclib (and the one of hyperframe) that jobd and jobctl use, here and
nowhere else, with a check that they are all still there.

grpclib 0.4 has no public way to do what these do: hand an accepted socket to the protocol its
server would make (``jobd.api.connections``), drop a closed connection's handler, ask a
stream's HTTP/2 flow-control window, read a request's 5-byte header before its body, or reach
the h2 connection for SETTINGS and GOAWAY. jobctl asks for larger frames through the
channel's protocol factory, and quiets hyperframe's repr of DATA frames.

pyproject.toml pins grpclib to the 0.4 series, and these were read in 0.4.9. A release that
moves any of them fails :func:`check_server` (jobd's start-up, and a unit test) or
:func:`check_client` (each jobctl connection) naming what moved, rather than a call later.
Both look only at the classes: they cost microseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grpclib.client import Channel
from grpclib.protocol import Connection, H2Protocol
from grpclib.protocol import Stream as H2Stream
from h2.connection import H2Connection
from hyperframe.frame import DataFrame

if TYPE_CHECKING:
    from grpclib.server import Handler, Server, Stream

TESTED = "0.4.9"


def _sets(cls: type, *names: str) -> list[str]:
    """Which of ``names`` ``cls.__init__`` no longer assigns (their stores name them)."""
    init = cls.__dict__.get("__init__")
    stored = set(init.__code__.co_names) if init is not None else set()
    return [f"{cls.__module__}.{cls.__qualname__}.{n}" for n in names if n not in stored]


def _has(cls: type, *names: str) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}.{n}" for n in names if not hasattr(cls, n)]


def _client_problems() -> list[str]:
    return [
        *_sets(Connection, "_connection"),
        *_has(Connection, "messages_received", "last_message_received"),
        *_sets(H2Stream, "_h2_connection", "connection", "window_updated"),
        *_has(H2Stream, "recv_data"),
        *_sets(Channel, "_config", "_h2_config"),
        *_has(Channel, "_protocol_factory"),
        *_has(DataFrame, "_body_repr"),
    ]


def _server_problems() -> list[str]:
    from grpclib.server import Server, Stream

    return [
        *_client_problems(),
        *_sets(Server, "_handlers"),
        *_has(Server, "_protocol_factory"),
        *_sets(Stream, "_stream", "_codec", "_recv_type", "_dispatch"),
        *_has(Stream, "_messages_received"),
    ]


class GrpclibChanged(RuntimeError):
    """The installed grpclib lacks a private name jobd or jobctl uses."""


def _raise(problems: list[str]) -> None:
    if problems:
        from importlib.metadata import version

        raise GrpclibChanged(
            f"grpclib {version('grpclib')} no longer has what jobd relies on "
            f"({', '.join(problems)}); jobd was checked with grpclib {TESTED}: "
            "jobd/api/grpclib_private.py needs updating"
        )


def check_server() -> None:
    """GrpclibChanged naming every private name jobd's server uses that is gone."""
    _raise(_server_problems())


def check_client() -> None:
    """The same for what jobctl's client uses."""
    _raise(_client_problems())


# --- the server ------------------------------------------------------------------------------


def server_handlers(server: Server) -> set[Handler]:
    """The handlers grpclib's server keeps until its own collection."""
    handlers: set[Handler] = server._handlers
    return handlers


def server_protocol_factory(server: Server) -> Callable[[], H2Protocol]:
    """What grpclib's server makes for each connection."""
    factory: Callable[[], H2Protocol] = server._protocol_factory
    return factory


def h2_of(connection: Connection) -> H2Connection:
    """A grpclib connection's h2 connection (SETTINGS, GOAWAY, flow control)."""
    return connection._connection


def h2_stream_of(stream: Stream[Any, Any]) -> H2Stream:
    """The HTTP/2 stream under a call (its h2 connection, window and data)."""
    h2_stream: H2Stream = stream._stream
    return h2_stream


def h2_of_stream(h2_stream: H2Stream) -> H2Connection:
    return h2_stream._h2_connection


def decode_request(stream: Stream[Any, Any], body: bytes) -> Any:
    """A request's body as its message, with the call's own codec and type."""
    return stream._codec.decode(body, stream._recv_type)


async def received(stream: Stream[Any, Any], message: Any, now: float) -> Any:
    """What grpclib's ``recv_message`` does once it has a message: the call's event
    listeners (``recv_message`` may replace it), and the stream's and connection's counts."""
    (message,) = await stream._dispatch.recv_message(message)
    stream._messages_received += 1
    stream._stream.connection.messages_received += 1
    stream._stream.connection.last_message_received = now
    return message


# --- jobctl ----------------------------------------------------------------------------------


def channel_configs(channel: Channel) -> tuple[Any, Any]:
    """A channel's grpclib config and h2 config, as its ``_protocol_factory`` passes them."""
    return channel._config, channel._h2_config


def quiet_data_frame_repr() -> None:
    """hyperframe's repr of a DATA frame serializes and hex-encodes the whole body, and h2
    evaluates repr(frame) for every frame it receives, for a trace log that is off: a third
    of jobctl's CPU while it received output (docs/perf-notes/lab.md, "Next to ssh"). The
    length says as much in a log."""

    def body_repr(self: DataFrame) -> str:
        return f"data=<{len(self.data)} bytes>"

    DataFrame._body_repr = body_repr  # type: ignore[method-assign, assignment]
