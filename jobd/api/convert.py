"""Translation between the jobd.v1 protobuf messages and the domain types. Nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from jobd.jobs.output import Chunk, Stream
from jobd.model import bounds
from jobd.model.job import Job, JobSpec, LimitRequest, Outcome, Result, State
from jobd.model.namespaces import ORDER, Namespace
from jobd.model.resources import Limits, Usage
from jobd.v1 import jobs_pb2 as pb

STATE_TO_PB: Mapping[State, pb.JobState.ValueType] = {
    State.STARTING: pb.JOB_STATE_STARTING,
    State.RUNNING: pb.JOB_STATE_RUNNING,
    State.STOPPING: pb.JOB_STATE_STOPPING,
    State.FINISHED: pb.JOB_STATE_FINISHED,
}

OUTCOME_TO_PB: Mapping[Outcome, pb.JobResult.Outcome.ValueType] = {
    Outcome.EXITED: pb.JobResult.OUTCOME_EXITED,
    Outcome.SIGNALED: pb.JobResult.OUTCOME_SIGNALED,
    Outcome.STOPPED: pb.JobResult.OUTCOME_STOPPED,
    Outcome.FAILED_TO_START: pb.JobResult.OUTCOME_FAILED_TO_START,
    Outcome.LOST: pb.JobResult.OUTCOME_LOST,
    Outcome.OOM_KILLED: pb.JobResult.OUTCOME_OOM_KILLED,
}

STREAM_TO_PB: Mapping[Stream, pb.OutputStream.ValueType] = {
    Stream.STDOUT: pb.OUTPUT_STREAM_STDOUT,
    Stream.STDERR: pb.OUTPUT_STREAM_STDERR,
}


STREAM_FROM_PB: Mapping[pb.OutputStream.ValueType, Stream] = {
    pb_value: stream for stream, pb_value in STREAM_TO_PB.items()
}


def limits_from_pb(msg: pb.Limits) -> LimitRequest:
    def get(name: str) -> Any:
        return getattr(msg, name) if msg.HasField(name) else None  # type: ignore[arg-type]

    return LimitRequest(
        cpu=get("cpu"),
        memory=get("memory_bytes"),
        io_read_bps=get("io_read_bps"),
        io_write_bps=get("io_write_bps"),
        io_device=msg.io_device,
        pids=get("pids"),
    )


def isolation_from_pb(msg: pb.Isolation) -> frozenset[Namespace]:
    return frozenset(ns for ns in ORDER if getattr(msg, ns.value))


def isolation_to_pb(namespaces: frozenset[Namespace]) -> pb.Isolation:
    return pb.Isolation(**{ns.value: True for ns in namespaces})


def spec_from_pb(request: pb.StartJobRequest) -> JobSpec:
    # An Isolation message that is present, even empty, is a request; absent: the default.
    isolation = request.isolation if request.HasField("isolation") else None
    return JobSpec(
        argv=tuple(request.argv),
        env=dict(request.env),
        cwd=request.cwd or "/",
        limits=limits_from_pb(request.limits),
        isolation=None if isolation is None else isolation_from_pb(isolation),
    )


def limits_to_pb(limits: Limits) -> pb.Limits:
    device = limits.io_device
    return pb.Limits(
        cpu=limits.cpu,
        memory_bytes=limits.memory,
        io_read_bps=limits.io_read_bps,
        io_write_bps=limits.io_write_bps,
        io_device=f"{device[0]}:{device[1]}" if device else "",
        pids=limits.pids,
    )


def usage_to_pb(usage: Usage) -> pb.Usage:
    return pb.Usage(
        cpu_seconds=usage.cpu_seconds or 0.0,
        memory_peak_bytes=usage.memory_peak,
        oom_kills=usage.oom_kills,
        pids_limit_hits=usage.pids_limit_hits,
        memory_current_bytes=usage.memory_current,
    )


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def result_to_pb(result: Result) -> pb.JobResult:
    msg = pb.JobResult(
        outcome=OUTCOME_TO_PB[result.outcome],
        stopped_by=result.stopped_by,
        message=result.message,
    )
    if result.exit_code is not None:
        msg.exit_code = result.exit_code
    if result.signal is not None:
        msg.signal = result.signal
    return msg


def job_to_pb(job: Job, brief: bool = False) -> pb.Job:
    """``brief``: for a list, the request summarized (``bounds.summarize_*``)."""
    argv = bounds.summarize_argv(job.spec.argv) if brief else job.spec.argv
    env = bounds.summarize_env(job.spec.env) if brief else job.spec.env
    return pb.Job(
        id=job.id,
        owner=job.owner,
        argv=argv,
        env=env,
        cwd=job.spec.cwd,
        state=STATE_TO_PB[job.state],
        result=result_to_pb(job.result) if job.result else None,
        created_at=_timestamp(job.created_at),
        started_at=_timestamp(job.started_at),
        ended_at=_timestamp(job.ended_at),
        pid=job.pid or 0,
        output_bytes=job.output_bytes,
        output_dropped_bytes=job.output_dropped_bytes,
        output_error=job.output_error,
        limits=limits_to_pb(job.limits),
        usage=usage_to_pb(job.usage),
        isolation=isolation_to_pb(job.isolation),
        run_as=job.run_as,
        syscall_filter=job.syscall_filter,
    )


def chunks_to_pb(chunks: list[Chunk]) -> pb.StreamOutputResponse:
    # Built in place with add(): handing the constructor new OutputChunk messages costs
    # protobuf (upb) ~1.4 ms per MiB of data to merge them in, 150x the copy itself.
    response = pb.StreamOutputResponse()
    add = response.chunks.add
    for c in chunks:
        add(stream=STREAM_TO_PB[c.stream], data=c.data, next_offset=c.next_offset)
    return response
