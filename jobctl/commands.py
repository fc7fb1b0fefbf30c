"""The jobctl commands, each an async function of a connected client and the parsed arguments.

Failures are raised, never printed here: :class:`jobctl.client.ClientError` from the client,
:class:`CommandFailed` for a request the server accepted but whose outcome is an error.
:mod:`jobctl.cli` turns both into one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager

from jobctl import render
from jobctl.client import ConnectError, FailedPrecondition, JobClient, Unavailable
from jobctl.render import printable
from jobd.v1 import jobs_pb2 as pb


class CommandFailed(Exception):
    """The request went through but the job did not do what was asked (e.g. failed to start)."""


async def run(args: argparse.Namespace) -> None:
    async with JobClient.connect(
        args.server, cacert=args.cacert, cert=args.cert, key=args.key
    ) as client:
        await COMMANDS[args.command](client, args)


async def start(client: JobClient, args: argparse.Namespace) -> None:
    try:
        job = await client.start(args.argv, env=dict(args.env), cwd=args.cwd)
    except FailedPrecondition as exc:  # jobd: the command cannot be executed
        raise CommandFailed(printable(exc.message) or str(exc)) from exc
    # The id goes out even on failure: the job exists and `jobctl status` can explain it.
    print(job.id, flush=True)
    if render.failed_to_start(job):
        raise CommandFailed(f"job {printable(job.id)}: {render.result_text(job)}")


async def stop(client: JobClient, args: argparse.Namespace) -> None:
    job = await client.stop(args.id, grace=args.grace)
    print(render.status_line(job))


async def status(client: JobClient, args: argparse.Namespace) -> None:
    job = await client.status(args.id)
    print(render.to_json(render.job_to_dict(job)) if args.json else render.job_details(job))


async def list_jobs(client: JobClient, args: argparse.Namespace) -> None:
    # One job more than shown says whether older ones remain.
    jobs = await client.list(args.owner, limit=None if args.all else args.limit + 1)
    more = not args.all and len(jobs) > args.limit
    jobs = jobs if args.all else jobs[: args.limit]
    if args.json:
        print(render.to_json([render.job_to_dict(job) for job in jobs]))
        return
    # Cut long commands only for a person at a terminal; a pipe gets whole lines to grep.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(render.job_table(jobs, width=width), flush=True)
    if more:
        note(f"showing the newest {len(jobs)} jobs; older ones exist (--all, --limit N)")


def note(text: str) -> None:
    print(f"jobctl: note: {text}", file=sys.stderr, flush=True)


STREAMS: dict[str | None, pb.OutputStream.ValueType] = {
    None: pb.OUTPUT_STREAM_UNSPECIFIED,
    "stdout": pb.OUTPUT_STREAM_STDOUT,
    "stderr": pb.OUTPUT_STREAM_STDERR,
}


class Output:
    """Where a job's output goes: its stdout to our stdout, its stderr to our stderr, as bytes.

    ``resume_offset`` is the ``next_offset`` of the last chunk written (None before the first):
    where ``jobctl logs`` with the same ``options`` and ``--offset`` picks up again.
    """

    def __init__(self, options: Sequence[str] = ()) -> None:
        self.out = sys.stdout.buffer
        self.err = sys.stderr.buffer
        self.options = list(options)
        self.resume_offset: int | None = None

    def write(self, stream: pb.OutputStream.ValueType, data: bytes) -> None:
        if data:
            (self.err if stream == pb.OUTPUT_STREAM_STDERR else self.out).write(data)

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()


class Tail:
    """The last ``lines`` lines of the chunks added, counted as jobd counts ``tail_lines``:
    every newline ends a line, and the newline that ends the output starts no new one.

    Holds only the chunks that can still hold those lines.
    """

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self._chunks: deque[tuple[pb.OutputStream.ValueType, bytes]] = deque()
        self._newlines_after_first = 0

    def add(self, stream: pb.OutputStream.ValueType, data: bytes) -> None:
        if not data:
            return
        if self._chunks:
            self._newlines_after_first += data.count(b"\n")
        self._chunks.append((stream, data))
        # More newlines than lines after the first chunk: even if the last one ends the
        # output, the lines start after the first chunk.
        while len(self._chunks) > 1 and self._newlines_after_first > self.lines:
            self._chunks.popleft()
            self._newlines_after_first -= self._chunks[0][1].count(b"\n")

    def chunks(self) -> list[tuple[pb.OutputStream.ValueType, bytes]]:
        chunks = list(self._chunks)
        newlines = 0
        for i in range(len(chunks) - 1, -1, -1):
            stream, data = chunks[i]
            cut = len(data) - 1 if i == len(chunks) - 1 and data.endswith(b"\n") else len(data)
            while (cut := data.rfind(b"\n", 0, cut)) >= 0:
                newlines += 1
                if newlines == self.lines:
                    return [(stream, data[cut + 1 :]), *chunks[i + 1 :]]
        return chunks


async def logs(client: JobClient, args: argparse.Namespace) -> None:
    only = STREAMS[args.only]
    output = Output((["-f"] if args.follow else []) + ([f"--{args.only}"] if args.only else []))
    if args.follow:
        job = await follow(client, args.id, output, args.offset, only, args.tail)
    else:
        job = await client.status(args.id)
        if job.state == pb.JOB_STATE_FINISHED:  # the stream ends by itself after the last byte
            job = await follow(client, args.id, output, args.offset, only, args.tail)
        else:
            await output_until(client, job, output, args.offset, only, args.tail)
    if text := render.dropped_note(job):
        note(text)


async def follow(
    client: JobClient,
    job_id: str,
    output: Output,
    offset: int = 0,
    only: pb.OutputStream.ValueType = pb.OUTPUT_STREAM_UNSPECIFIED,
    tail_lines: int = 0,
) -> pb.Job:
    """Write the job's output (chosen by the server) until it ends; its final status."""
    final: pb.Job | None = None
    stream = client.stream(job_id, offset, only=only, tail_lines=tail_lines)
    with _resume_hint(output, job_id):
        async with aclosing(stream) as messages:
            # Read on to the end of the call after the final status (the server ends it right
            # away): leaving earlier would reset a call the server is finishing.
            async for message in messages:
                for chunk in message.chunks:
                    output.write(chunk.stream, chunk.data)
                    output.resume_offset = chunk.next_offset
                output.flush()
                if message.HasField("final"):
                    final = message.final
    if final is None:
        hint = _resume_text(output, job_id)
        raise CommandFailed(f"the output stream of job {printable(job_id)} ended early{hint}")
    return final


async def output_until(
    client: JobClient,
    job: pb.Job,
    output: Output,
    offset: int = 0,
    only: pb.OutputStream.ValueType = pb.OUTPUT_STREAM_UNSPECIFIED,
    tail_lines: int = 0,
) -> None:
    """Write the output a running ``job`` (as GetJob saw it) had then, and stop there.

    A stream says where it is in the framed log, not how many output bytes came before, and
    never says "this was the end for now". The one measure of "then" is ``job.output_bytes``
    (both streams together), so read both from the start, count, and choose here what the
    server would have chosen: the stream, the offset to start at, the last lines.
    """
    limit = job.output_bytes
    if limit == 0:
        return
    tail = Tail(tail_lines) if tail_lines else None
    received = 0
    position = 0  # where the chunk being looked at starts in the log
    with _resume_hint(output, job.id):
        async with aclosing(client.stream(job.id)) as messages:
            async for message in messages:
                for chunk in message.chunks:
                    if received >= limit:
                        break
                    data = chunk.data[: limit - received]
                    received += len(data)
                    start, position = position, chunk.next_offset
                    if start < offset < position:
                        raise CommandFailed(
                            f"offset {offset} is not where a chunk of job "
                            f"{printable(job.id)} starts: give a next_offset"
                        )
                    if (offset and position <= offset) or (only and chunk.stream != only):
                        continue
                    if tail is not None:
                        tail.add(chunk.stream, data)
                    else:
                        output.write(chunk.stream, data)
                        output.resume_offset = position
                output.flush()
                if received >= limit and not message.HasField("final"):
                    break  # what existed when asked; the server stops when it sees the reset
    if tail is not None:
        for stream, data in tail.chunks():
            output.write(stream, data)
        output.flush()


def _resume_text(output: Output, job_id: str) -> str:
    if output.resume_offset is None:
        return ""
    words = ["jobctl", "logs", *output.options, "--offset", str(output.resume_offset), job_id]
    return f" (for the rest: {printable(shlex.join(words))})"


@contextmanager
def _resume_hint(output: Output, job_id: str) -> Iterator[None]:
    """Name the offset to resume from when the connection breaks after some output."""
    try:
        yield
    except (ConnectError, Unavailable) as exc:
        hint = _resume_text(output, job_id)
        if not hint:
            raise
        if isinstance(exc, ConnectError):
            raise type(exc)(f"{exc}{hint}", server=exc.server) from exc
        raise type(exc)(f"{exc.message}{hint}") from exc


COMMANDS: dict[str, Callable[[JobClient, argparse.Namespace], Awaitable[None]]] = {
    "start": start,
    "stop": stop,
    "status": status,
    "list": list_jobs,
    "logs": logs,
}
