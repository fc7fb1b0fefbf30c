"""Prometheus metrics on an optional plain-HTTP listener (``--metrics HOST:PORT``).

Counters and one histogram kept in memory and written in the text exposition format on
``GET /metrics``. The listener has no TLS and no authentication: bind it to loopback or a
monitoring network only.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

START_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


class Metrics:
    def __init__(self) -> None:
        self.jobs_started = 0
        self.jobs_finished: Counter[str] = Counter()
        self.rpcs: Counter[tuple[str, str]] = Counter()
        self.bytes_streamed = 0
        self.start_buckets = [0] * len(START_BUCKETS)
        self.start_count = 0
        self.start_sum = 0.0
        # Gauges read when scraped: (running jobs, open streams).
        self.gauges: Callable[[], tuple[int, int]] = lambda: (0, 0)
        # jobd.api.connections: refused by cap; dropped by reason; open now (handshakes too).
        self.connections_refused: Counter[str] = Counter()
        self.connections_dropped: Counter[str] = Counter()
        self.connections_open: Callable[[], int] = lambda: 0

    def job_started(self, seconds: float) -> None:
        self.jobs_started += 1
        self.start_count += 1
        self.start_sum += seconds
        i = bisect.bisect_left(START_BUCKETS, seconds)
        for j in range(i, len(START_BUCKETS)):
            self.start_buckets[j] += 1

    def render(self) -> str:
        running, streams = self.gauges()
        lines = [
            "# HELP jobd_jobs_started_total Jobs whose process was started.",
            "# TYPE jobd_jobs_started_total counter",
            f"jobd_jobs_started_total {self.jobs_started}",
            "# HELP jobd_jobs_finished_total Jobs that ended, by how.",
            "# TYPE jobd_jobs_finished_total counter",
            *(f'jobd_jobs_finished_total{{outcome="{o}"}} {n}'
              for o, n in sorted(self.jobs_finished.items())),
            "# HELP jobd_jobs_running Jobs running now.",
            "# TYPE jobd_jobs_running gauge",
            f"jobd_jobs_running {running}",
            "# HELP jobd_rpcs_total Calls answered, by method and gRPC status.",
            "# TYPE jobd_rpcs_total counter",
            *(f'jobd_rpcs_total{{method="{m}",status="{s}"}} {n}'
              for (m, s), n in sorted(self.rpcs.items())),
            "# HELP jobd_streams_open Output streams being served now.",
            "# TYPE jobd_streams_open gauge",
            f"jobd_streams_open {streams}",
            "# HELP jobd_streamed_bytes_total Job output bytes sent to followers.",
            "# TYPE jobd_streamed_bytes_total counter",
            f"jobd_streamed_bytes_total {self.bytes_streamed}",
            "# HELP jobd_start_seconds Time to answer StartJob.",
            "# TYPE jobd_start_seconds histogram",
            *(f'jobd_start_seconds_bucket{{le="{le}"}} {n}'
              for le, n in zip(START_BUCKETS, self.start_buckets, strict=True)),
            f'jobd_start_seconds_bucket{{le="+Inf"}} {self.start_count}',
            f"jobd_start_seconds_sum {self.start_sum}",
            f"jobd_start_seconds_count {self.start_count}",
            "# HELP jobd_connections_open Client connections open now, handshaking ones too.",
            "# TYPE jobd_connections_open gauge",
            f"jobd_connections_open {self.connections_open()}",
            "# HELP jobd_connections_refused_total Connections closed at once, by the cap met.",
            "# TYPE jobd_connections_refused_total counter",
            *(f'jobd_connections_refused_total{{limit="{c}"}} {n}'
              for c, n in sorted(self.connections_refused.items())),
            "# HELP jobd_connections_dropped_total Connections the daemon closed, by reason.",
            "# TYPE jobd_connections_dropped_total counter",
            *(f'jobd_connections_dropped_total{{reason="{r}"}} {n}'
              for r, n in sorted(self.connections_dropped.items())),
        ]
        return "\n".join(lines) + "\n"


async def serve(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                    data = await stream.receive_some(MAX_REQUEST)
                    if not data:
                        break
                    request += data
            line = request.split(b"\r\n", 1)[0].split()
            if line[:2] == [b"GET", b"/metrics"]:
                body = metrics.render().encode()
                head = "200 OK\r\nContent-Type: text/plain; version=0.0.4"
            else:
                body, head = b"not found\n", "404 Not Found\r\nContent-Type: text/plain"
            length = f"Content-Length: {len(body)}\r\nConnection: close"
            response = f"HTTP/1.1 {head}\r\n{length}\r\n\r\n".encode() + body
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(response)

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)
