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


def limits_of(args: argparse.Namespace) -> pb.Limits:
    """The Limits of a StartJobRequest from the options of :func:`jobctl.cli.add_limit_options`;
    what was not given stays unset (the server's default)."""
    return pb.Limits(
        cpu=args.cpu,
        memory_bytes=args.memory,
        io_read_bps=args.io_read_bps,
        io_write_bps=args.io_write_bps,
        io_device=args.io_device or "",
        pids=args.pids,
    )


def isolation_of(args: argparse.Namespace) -> pb.Isolation | None:
    """The Isolation of a StartJobRequest from ``--isolate`` / ``--no-isolate``: None (the
    role's default) when neither was given; an empty one asks for none."""
    chosen = getattr(args, "isolate", None)
    return None if chosen is None else pb.Isolation(**{name: True for name in chosen})


async def start(client: JobClient, args: argparse.Namespace) -> None:
    try:
        job = await client.start(
            args.argv,
            env=dict(args.env),
            cwd=args.cwd,
            limits=limits_of(args),
            isolation=isolation_of(args),
        )
    except FailedPrecondition as exc:  # cannot execute it, enforce a limit, make a namespace
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


async def logs(client: JobClient, args: argparse.Namespace) -> None:
    # Without -f the server stops at the end of the output there is when it is asked.
    output = Output((["-f"] if args.follow else []) + ([f"--{args.only}"] if args.only else []))
    only = STREAMS[args.only]
    job = await follow(
        client, args.id, output, args.offset, only, args.tail, no_follow=not args.follow
    )
    if text := render.dropped_note(job):
        note(text)


async def follow(
    client: JobClient,
    job_id: str,
    output: Output,
    offset: int = 0,
    only: pb.OutputStream.ValueType = pb.OUTPUT_STREAM_UNSPECIFIED,
    tail_lines: int = 0,
    *,
    no_follow: bool = False,
) -> pb.Job:
    """Write the job's output (chosen by the server) until it ends, or with ``no_follow``
    up to where it was when asked; the job's status at the end of the stream."""
    final: pb.Job | None = None
    stream = client.stream(job_id, offset, only=only, tail_lines=tail_lines, no_follow=no_follow)
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
