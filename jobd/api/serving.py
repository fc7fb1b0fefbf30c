"""The server the API runs on: grpclib's, under trio-asyncio, with the standard health and
reflection services beside jobd's, so that generic tools (grpcurl, grpc_health_probe, load
balancers) work with the same mutual TLS. jobd accepts the connections itself (handshake
deadline, caps: ``jobd.api.connections``), never through grpclib's ``Server.start``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """What grpclib runs on, for the tasks of the nursery it wraps. An error in an asyncio
    callback (one connection's transport or protocol) is logged as asyncio logs it, and goes
    no further: trio-asyncio's own handler raises it into the loop's nursery, which ended the
    daemon (seen once: asyncio's socket transport calling connection_lost twice after a write
    to a client that had gone)."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_only)
        yield loop


def _log_only(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    asyncio.BaseEventLoop.default_exception_handler(loop, context)  # type: ignore[arg-type]


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
