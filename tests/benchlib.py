"""What every benchmark group shares: the daemon it runs, its rows and the table's records,
and a few measurements (percentiles, a process's memory and CPU time)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Certs, Daemon

MiB = 1 << 20
# The built-in quotas (600 starts a minute per identity) would stop the load the bench makes.
NO_QUOTAS = ("[quotas.default]\nrunning = 1000000\nstarts_per_minute = 1000000\n"
             'streams = 1000000\noutput = "1T"\n')


def bench_daemon(certs: Certs, state: Path, *flags: str, extra: str = "",
                 **options: Any) -> Daemon:  # fmt: skip
    """A daemon for the bench: harness.Daemon without the per-identity quotas (``extra``: more
    config), its log in a file next to its state directory (not read a line at a time by a
    thread of the bench)."""
    log_file = state.parent / f"{state.name}.log"
    return Daemon(certs, state, *flags, config_extra=NO_QUOTAS + extra, log_file=log_file,
                  **options)  # fmt: skip


@dataclass
class Row:
    group: str
    name: str
    value: float
    unit: str
    floor: float | None = None
    floor_name: str = ""
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor else None


ROWS: list[Row] = []


def record(row: Row) -> None:
    ROWS.append(row)
    ratio = f"  ({row.ratio:.2f}x {row.floor_name})" if row.ratio is not None else ""
    print(f"  {row.name}: {row.value:.3f} {row.unit}{ratio}", flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# Clients (asyncio + grpclib, like jobctl)


async def open_stub(daemon: Daemon, who: str = "client_0") -> tuple[Any, Any]:
    from grpclib.client import Channel

    from jobd.api.tls import client_context
    from jobd.v1.jobs_grpc import JobServiceStub

    channel = Channel("127.0.0.1", daemon.port, ssl=client_context(daemon.certs.ca,
                                                                   daemon.certs.client(who)))
    return channel, JobServiceStub(channel)


async def timed_calls(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(n):
        begin = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - begin) * 1000)
    return samples


def cpu_seconds(pid: int) -> float:
    """User and system CPU time ``pid`` has used so far (not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiet_disk() -> None:
    """Before a run that writes 1 GiB: write back what earlier runs left dirty, and (as root)
    drop the clean page cache they left, so that every such run starts from the same state.

    On this machine (a Firecracker VM) writing into guest memory never touched before costs
    ~5x more system time than reusing freed memory: `head -c 1G /dev/zero | cat > FILE`
    took 2.8 s with 6 GiB of earlier output still cached and 0.55 s without. Left alone, the
    1 GiB rows measured how much output earlier groups had written.
    """
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
