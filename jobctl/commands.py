"""The jobctl commands, each an async function of a connected client and the parsed arguments.

Failures are raised, never printed here: :class:`jobctl.client.ClientError` from the client,
:class:`CommandFailed` for a request the server accepted but whose outcome is an error.
:mod:`jobctl.cli` turns both into one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from jobctl import render
from jobctl.client import JobClient
from jobd.v1 import jobs_pb2 as pb


class CommandFailed(Exception):
    """The request went through but the job did not do what was asked (e.g. failed to start)."""


async def run(args: argparse.Namespace) -> None:
    async with JobClient.connect(
        args.server, cacert=args.cacert, cert=args.cert, key=args.key
    ) as client:
        await COMMANDS[args.command](client, args)


async def start(client: JobClient, args: argparse.Namespace) -> None:
    job = await client.start(args.argv, env=dict(args.env), cwd=args.cwd)
    # The id goes out even on failure: the job exists and `jobctl status` can explain it.
    print(job.id, flush=True)
    if render.failed_to_start(job):
        raise CommandFailed(f"job {render.printable(job.id)}: {render.result_text(job)}")


async def stop(client: JobClient, args: argparse.Namespace) -> None:
    job = await client.stop(args.id, grace=args.grace)
    print(render.status_line(job))


async def status(client: JobClient, args: argparse.Namespace) -> None:
    job = await client.status(args.id)
    print(render.to_json(render.job_to_dict(job)) if args.json else render.job_details(job))


async def list_jobs(client: JobClient, args: argparse.Namespace) -> None:
    jobs = await client.list(owner=args.owner)
    if args.json:
        print(render.to_json([render.job_to_dict(job) for job in jobs]))
        return
    # Cut long commands only for a person at a terminal; a pipe gets whole lines to grep.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(render.job_table(jobs, width=width))


async def logs(client: JobClient, args: argparse.Namespace) -> None:
    # Without --follow, stop at what existed when we asked. Stream offsets count the framed
    # log, not output bytes, so compare the data bytes received with GetJob's output_bytes.
    limit: int | None = None
    if not args.follow:
        job = await client.status(args.id)
        if job.state != pb.JOB_STATE_FINISHED:
            limit = job.output_bytes
            if limit == 0:
                return
    out, err = sys.stdout.buffer, sys.stderr.buffer
    received = 0
    async with aclosing(client.stream(args.id)) as messages:
        async for message in messages:
            for chunk in message.chunks:
                (err if chunk.stream == pb.OUTPUT_STREAM_STDERR else out).write(chunk.data)
                received += len(chunk.data)
            out.flush()
            err.flush()
            if message.HasField("final") or (limit is not None and received >= limit):
                break


COMMANDS: dict[str, Callable[[JobClient, argparse.Namespace], Awaitable[None]]] = {
    "start": start,
    "stop": stop,
    "status": status,
    "list": list_jobs,
    "logs": logs,
}
