"""Translation between the jobd.v1 protobuf messages and the domain types. Nothing else."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from jobd.job import Job, JobSpec, Outcome, Result, State
from jobd.output import Chunk, Stream
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
}

STREAM_TO_PB: Mapping[Stream, pb.OutputStream.ValueType] = {
    Stream.STDOUT: pb.OUTPUT_STREAM_STDOUT,
    Stream.STDERR: pb.OUTPUT_STREAM_STDERR,
}


STREAM_FROM_PB: Mapping[pb.OutputStream.ValueType, Stream] = {
    pb_value: stream for stream, pb_value in STREAM_TO_PB.items()
}


def spec_from_pb(request: pb.StartJobRequest) -> JobSpec:
    return JobSpec(argv=tuple(request.argv), env=dict(request.env), cwd=request.cwd or "/")


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


def job_to_pb(job: Job) -> pb.Job:
    return pb.Job(
        id=job.id,
        owner=job.owner,
        argv=job.spec.argv,
        env=job.spec.env,
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
    )


def chunks_to_pb(chunks: list[Chunk]) -> pb.StreamOutputResponse:
    return pb.StreamOutputResponse(
        chunks=[
            pb.OutputChunk(stream=STREAM_TO_PB[c.stream], data=c.data, next_offset=c.next_offset)
            for c in chunks
        ]
    )
