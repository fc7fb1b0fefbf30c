"""The server the API runs on: grpclib's, under trio-asyncio, with the standard health and
reflection services beside jobd's, so that generic tools (grpcurl, grpc_health_probe, load
balancers) work with the same mutual TLS. jobd accepts the connections itself (handshake
deadline, caps: ``jobd.api.connections``), never through grpclib's ``Server.start``."""

from __future__ import annotations

import asyncio
import logging
import ssl
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio_asyncio
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server

from jobd.api import grpclib_private
from jobd.api.connections import Listener
from jobd.api.metrics import Metrics
from jobd.api.service import JobService
from jobd.policy.connections import ConnectionLimits

log = logging.getLogger(__name__)
JOBD = Path(__file__).resolve().parent.parent  # the jobd package

@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """What grpclib runs on, for the tasks of the nursery it wraps. An error in an asyncio
    callback is logged and goes no further: trio-asyncio's own handler raises it into the
    loop's nursery, which ended the daemon."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_only)
        yield loop


def _log_only(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A failure in jobd's own code gets asyncio's full report (a bug: its traceback). One in
    asyncio's alone gets one line: Python 3.11's socket transport runs connection_lost twice
    when a write fails inside ``_write_ready`` (``_maybe_resume_protocol`` -> SSL -> ``write``
    -> ``_force_close``, then ``_call_connection_lost`` again), which a client that resets
    its connection while a stream is paused for it causes about every other time. The
    connection is closed by then, and nothing of jobd's is left in a wrong state."""
    exc = context.get("exception")
    if exc is None or _raised_in_jobd(exc):
        asyncio.BaseEventLoop.default_exception_handler(loop, context)  # type: ignore[arg-type]
        return
    log.warning("asyncio: %s: %s: %s (the daemon goes on)", context.get("message"),
                type(exc).__name__, exc)  # fmt: skip


def _raised_in_jobd(exc: BaseException) -> bool:
    """Whether ``exc``, or one it was raised while handling, passed through jobd's code."""
    seen: BaseException | None = exc
    while seen is not None:
        if any(Path(frame.filename).is_relative_to(JOBD)
               for frame in traceback.extract_tb(seen.__traceback__)):  # fmt: skip
            return True
        seen = seen.__context__
    return False


@dataclass
class Api:
    listener: Listener
    serving: ServiceStatus

    def stop_serving(self) -> None:
        """Health checks say NOT_SERVING from now on (the daemon is shutting down)."""
        self.serving.set(False)


def build(service: JobService, ssl_context: ssl.SSLContext, limits: ConnectionLimits,
          metrics: Metrics) -> Api:  # fmt: skip
    """The server and its listener, inside ``asyncio_loop()``; ``listener.serve`` binds.
    GrpclibChanged, before anything is served, if grpclib lacks what jobd reaches into."""
    grpclib_private.check_server()
    grpclib_private.quiet_data_frame_repr()  # h2 would copy each request's body for a repr
    serving = ServiceStatus()
    serving.set(True)
    health = Health({service: [serving]})
    server = Server(ServerReflection.extend([service, health]))
    return Api(Listener(server, ssl_context, limits, metrics), serving)
