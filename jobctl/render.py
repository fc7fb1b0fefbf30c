"""Formatting of jobs for people (status lines, detail blocks, tables) and for programs (JSON).

Every string that came from the server is passed through :func:`printable` before it reaches a
terminal: argv, owner and messages are chosen by other users, and a raw escape sequence in a
job's argv must not be able to drive an administrator's terminal.
"""

from __future__ import annotations

import math
import shlex
import signal
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp

from jobctl.units import format_size
from jobd.v1 import jobs_pb2 as pb

ELLIPSIS = "..."


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped like ``repr`` does."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def state_name(state: int) -> str:
    try:
        return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]
    except ValueError:  # a newer server's state
        return f"state {state}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def result_text(job: pb.Job) -> str:
    """How a finished job ended, e.g. ``exited with code 0``; empty while it has not ended."""
    if job.state != pb.JOB_STATE_FINISHED:
        return ""
    result = job.result
    if result.message:
        return printable(result.message)
    # Fallback for a server that leaves `message` empty: build it from the structured fields.
    outcome = result.outcome
    if outcome == pb.JobResult.OUTCOME_EXITED and result.HasField("exit_code"):
        return f"exited with code {result.exit_code}"
    if outcome == pb.JobResult.OUTCOME_SIGNALED and result.HasField("signal"):
        return f"killed by {signal_name(result.signal)}"
    if outcome == pb.JobResult.OUTCOME_STOPPED:
        return f"stopped by {printable(result.stopped_by)}" if result.stopped_by else "stopped"
    if outcome == pb.JobResult.OUTCOME_FAILED_TO_START:
        return "failed to start"
    if outcome == pb.JobResult.OUTCOME_LOST:
        return "lost: the daemon died while it ran"
    if outcome == pb.JobResult.OUTCOME_OOM_KILLED:
        return "killed by the OOM killer: memory limit reached"
    return "finished"


def failed_to_start(job: pb.Job) -> bool:
    return job.result.outcome == pb.JobResult.OUTCOME_FAILED_TO_START


def status_line(job: pb.Job) -> str:
    """One line: ``ID: exited with code 0`` or ``ID: running (pid 42)``."""
    what = result_text(job) or state_name(job.state)
    if job.state != pb.JOB_STATE_FINISHED and job.pid:
        what += f" (pid {job.pid})"
    return f"{printable(job.id)}: {what}"


def command_text(argv: Sequence[str]) -> str:
    return printable(shlex.join(argv))


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def iso_time(when: float) -> str:
    """Local time with its offset, to the second: ``2024-05-01T12:00:03+02:00``."""
    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def age(elapsed: float) -> str:
    """A short duration like ``42s``, ``5m``, ``3h`` or ``2d``, truncated to its largest unit."""
    whole = max(0, int(elapsed))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB``: binary units, one decimal above bytes."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def limits_text(limits: pb.Limits) -> str:
    """``cpu 0.5, memory 256 MiB, pids 64, io read 10 MiB/s on 254:0``; ``none`` if unset."""
    parts = []
    if limits.HasField("cpu"):
        parts.append(f"cpu {limits.cpu:g}")
    if limits.HasField("memory_bytes"):
        parts.append(f"memory {format_size(limits.memory_bytes)}")
    if limits.HasField("pids"):
        parts.append(f"pids {limits.pids}")
    io = []
    if limits.HasField("io_read_bps"):
        io.append(f"read {format_size(limits.io_read_bps)}/s")
    if limits.HasField("io_write_bps"):
        io.append(f"write {format_size(limits.io_write_bps)}/s")
    if io or limits.io_device:
        device = f" on {printable(limits.io_device)}" if limits.io_device else ""
        parts.append(f"io {', '.join(io) or 'device'}{device}")
    return ", ".join(parts) or "none"


ISOLATION_FIELDS = ("pid", "mount", "network", "uts", "ipc")


def isolation_text(isolation: pb.Isolation) -> str:
    """``pid, mount, network, uts, ipc``: the job's own namespaces; ``none`` if it has none."""
    return ", ".join(name for name in ISOLATION_FIELDS if getattr(isolation, name)) or "none"


def usage_text(usage: pb.Usage) -> str:
    """``cpu 1.23 s, memory peak 12.3 MiB, OOM kills 1, task-limit hits 3`` (counters when
    not zero)."""
    parts = [f"cpu {usage.cpu_seconds:.2f} s"]
    if usage.HasField("memory_current_bytes"):
        parts.append(f"memory {format_size(usage.memory_current_bytes)}")
    if usage.HasField("memory_peak_bytes"):
        parts.append(f"memory peak {format_size(usage.memory_peak_bytes)}")
    if usage.oom_kills:
        parts.append(f"OOM kills {usage.oom_kills}")
    if usage.pids_limit_hits:
        parts.append(f"task-limit hits {usage.pids_limit_hits}")
    return ", ".join(parts)


def end_note(job: pb.Job) -> str:
    """What ``jobctl run`` says on stderr of a job that did not exit by itself, e.g. ``job 1a2b
    killed: out of memory (limit 64 MiB)``: its exit status alone (137) cannot tell an OOM
    kill from a SIGKILL, nor a stop from a crash. Empty for a job that exited."""
    if job.result.outcome == pb.JobResult.OUTCOME_EXITED or not (text := result_text(job)):
        return ""
    return f"job {printable(job.id)} {text}"


def dropped_note(job: pb.Job) -> str:
    """The note for output the server dropped, e.g. ``output truncated: 12 bytes dropped (...)``;
    empty when nothing was dropped."""
    if not job.output_dropped_bytes:
        return ""
    why = f" ({printable(job.output_error)})" if job.output_error else ""
    return f"output truncated: {job.output_dropped_bytes} bytes dropped{why}"


def _when(job: pb.Job, field: Literal["created_at", "started_at", "ended_at"], now: float) -> str:
    if not job.HasField(field):
        return "-"
    at = seconds(getattr(job, field))
    return f"{iso_time(at)} ({age(now - at)} ago)"


def job_details(job: pb.Job, now: float | None = None) -> str:
    """A block of ``Label: value`` lines describing one job."""
    now = time.time() if now is None else now
    rows = [
        ("ID", printable(job.id)),
        ("Owner", printable(job.owner)),
        ("State", state_name(job.state)),
        ("Result", result_text(job) or "-"),
        ("Command", command_text(job.argv)),
        ("Directory", printable(job.cwd) or "/"),
        ("Created", _when(job, "created_at", now)),
        ("Started", _when(job, "started_at", now)),
        ("Ended", _when(job, "ended_at", now)),
        ("PID", str(job.pid) if job.pid else "-"),
        ("Account", printable(job.run_as) or "-"),
        ("Output", f"{size(job.output_bytes)} ({job.output_bytes} bytes)"),
    ]
    if job.output_dropped_bytes:
        dropped = job.output_dropped_bytes
        rows.append(("Dropped", f"{size(dropped)} ({dropped} bytes) of output not kept"))
    if job.output_error:
        rows.append(("Output error", printable(job.output_error)))
    if job.HasField("limits"):
        rows.append(("Limits", limits_text(job.limits)))
    if job.HasField("isolation"):
        rows.append(("Isolation", isolation_text(job.isolation)))
    if job.syscall_filter:
        rows.append(("Syscalls", f"filter {printable(job.syscall_filter)}"))
    if job.HasField("usage"):
        rows.append(("Usage", usage_text(job.usage)))
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in rows)


def truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    return text[: width - len(ELLIPSIS)] + ELLIPSIS


def table(header: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    """Left-aligned columns two spaces apart; the last column is cut to fit ``width``."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    if width is not None:
        room = max(width - sum(widths) - 2 * len(widths), len(header[-1]), 12)
        for line in lines:
            line[-1] = truncate(line[-1], room)
    out = []
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line, widths, strict=False)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)


JOB_TABLE_HEADER = ("ID", "OWNER", "STATE", "RESULT", "AGE", "COMMAND")


def job_table(jobs: Sequence[pb.Job], now: float | None = None, width: int | None = None) -> str:
    """One row per job, in the order given (the server's: newest first), under
    :data:`JOB_TABLE_HEADER`."""
    now = time.time() if now is None else now
    rows = [
        (
            printable(job.id),
            printable(job.owner),
            state_name(job.state),
            result_text(job) or "-",
            age(now - seconds(job.created_at)) if job.HasField("created_at") else "-",
            command_text(job.argv),
        )
        for job in jobs
    ]
    return table(JOB_TABLE_HEADER, rows, width)


def job_to_dict(job: pb.Job) -> dict[str, Any]:
    """The Job in proto3 JSON form, field names as in the .proto, 64-bit numbers unquoted."""
    from google.protobuf import json_format  # 12 ms of start-up, only for --json

    data = json_format.MessageToDict(
        job,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return {field.name: data[field.name] for field in job.DESCRIPTOR.fields if field.name in data}


def to_json(value: Any) -> str:
    import json  # only for --json

    return json.dumps(value, indent=2)


SIGKILL = 9


def exit_status(job: pb.Job) -> int:
    """The exit status ``jobctl run`` hands on for a finished job, as a shell would: the exit
    code, 128+N for signal N (an OOM kill counts as SIGKILL), 1 when it did not run to an
    end of its own (failed to start, lost, or no status at all)."""
    result = job.result
    if result.outcome == pb.JobResult.OUTCOME_OOM_KILLED:
        return 128 + SIGKILL
    if result.outcome in (
        pb.JobResult.OUTCOME_EXITED,
        pb.JobResult.OUTCOME_SIGNALED,
        pb.JobResult.OUTCOME_STOPPED,
    ):
        if result.HasField("signal"):
            return 128 + result.signal
        if result.HasField("exit_code"):
            return result.exit_code & 0xFF
    return 1


def cpu_percent(cpu_now: float, cpu_before: float, elapsed: float) -> float | None:
    """CPU use over ``elapsed`` wall-clock seconds in percent of one core (200.0: two cores
    busy), from two readings of a job's ``usage.cpu_seconds``; None when no time has passed."""
    if not (elapsed > 0 and math.isfinite(elapsed)):
        return None
    return max(0.0, (cpu_now - cpu_before) / elapsed * 100)


TOP_HEADER = ("ID", "OWNER", "CPU%", "MEM", "AGE", "COMMAND")
SHORT_ID = 8
OWNER_WIDTH = 12


def top_table(
    jobs: Sequence[pb.Job],
    cpu: dict[str, float | None],
    now: float | None = None,
    width: int | None = 80,
) -> str:
    """``jobctl top``'s table: one row per job, ``cpu`` its CPU% by job id (missing or None:
    ``-``). MEM is the memory the job uses now (page cache included), ``-`` when the server
    does not measure it. Cut to ``width`` columns."""
    now = time.time() if now is None else now
    rows = []
    for job in jobs:
        percent = cpu.get(job.id)
        usage = job.usage
        mem = usage.memory_current_bytes if usage.HasField("memory_current_bytes") else None
        rows.append(
            (
                printable(job.id)[:SHORT_ID],
                truncate(printable(job.owner), OWNER_WIDTH),
                "-" if percent is None else f"{percent:.1f}",
                "-" if mem is None else size(mem),
                age(now - seconds(job.created_at)) if job.HasField("created_at") else "-",
                command_text(job.argv),
            )
        )
    return table(TOP_HEADER, rows, width)
