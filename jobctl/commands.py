"""The jobctl commands, each an async function of a connected client and the parsed arguments.

Failures are raised, never printed here: :class:`jobctl.client.ClientError` from the client,
:class:`CommandFailed` for a request the server accepted but whose outcome is an error.
:mod:`jobctl.cli` turns both into one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager

from jobctl import render
from jobctl.client import ClientError, ConnectError, FailedPrecondition, JobClient, Unavailable
from jobctl.render import printable
from jobd.v1 import jobs_pb2 as pb


class CommandFailed(Exception):
    """The request went through but the job did not do what was asked (e.g. failed to start)."""


async def run(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its exit status (0 unless it says otherwise)."""
    async with JobClient.connect(
        args.server, cacert=args.cacert, cert=args.cert, key=args.key
    ) as client:
        return await COMMANDS[args.command](client, args) or 0


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


async def _start(client: JobClient, args: argparse.Namespace) -> pb.Job:
    try:
        return await client.start(
            args.argv,
            env=dict(args.env),
            cwd=args.cwd,
            limits=limits_of(args),
            isolation=isolation_of(args),
        )
    except FailedPrecondition as exc:  # cannot execute it, enforce a limit, make a namespace
        raise CommandFailed(printable(exc.message) or str(exc)) from exc


async def start(client: JobClient, args: argparse.Namespace) -> None:
    job = await _start(client, args)
    # The id goes out even on failure: the job exists and `jobctl status` can explain it.
    print(render.to_json(render.job_to_dict(job)) if args.json else job.id, flush=True)
    if render.failed_to_start(job):
        raise CommandFailed(f"job {printable(job.id)}: {render.result_text(job)}")


async def stop(client: JobClient, args: argparse.Namespace) -> None:
    job = await client.stop(args.id, grace=args.grace)
    print(render.to_json(render.job_to_dict(job)) if args.json else render.status_line(job))


async def status(client: JobClient, args: argparse.Namespace) -> None:
    if args.watch:
        await watch(client, args)
        return
    job = await client.status(args.id)
    print(render.to_json(render.job_to_dict(job)) if args.json else render.job_details(job))


CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen


def _catch_ctrl_c() -> bool:
    """Whether to take Ctrl-C over: not when it came ignored, as a shell starts background
    commands (``jobctl run ... &`` in a script), so that a Ctrl-C meant for the script's
    foreground neither stops the job nor ends the follow."""
    return signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


class _Quit:
    """Ctrl-C as an event to wait on (with a timeout: the refresh interval) while it is set up."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def __enter__(self) -> _Quit:
        if _catch_ctrl_c():
            self.loop.add_signal_handler(signal.SIGINT, self.event.set)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            self.loop.remove_signal_handler(signal.SIGINT)

    async def wait(self, seconds: float) -> bool:
        """Wait ``seconds``; True when Ctrl-C came first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        return self.event.is_set()


async def watch(client: JobClient, args: argparse.Namespace) -> None:
    """``status --watch``: on a terminal the details, redrawn in place at each refresh; else
    one status line each time it changes (JSON: the job, one object a line). Until it ends."""
    import json

    tty = sys.stdout.isatty() and not args.json
    last = ""
    while True:
        job = await client.status(args.id)
        if args.json:
            text = json.dumps(render.job_to_dict(job))
        elif tty:
            text = render.job_details(job)
        else:
            text = render.status_line(job)
        if text != last:
            print(CLEAR + text if tty else text, flush=True)
            last = text
        if job.state == pb.JOB_STATE_FINISHED:
            return
        await asyncio.sleep(args.interval)


LIVE_STATES = (pb.JOB_STATE_STARTING, pb.JOB_STATE_RUNNING, pb.JOB_STATE_STOPPING)
TOP_MAX_JOBS = 50  # jobs asked about one by one (GetJob refreshes their usage) per refresh


async def top(client: JobClient, args: argparse.Namespace) -> None:
    once = args.once or args.json or not sys.stdout.isatty()
    # cpu_seconds and when it was read, per job, from the refresh before.
    before: dict[str, tuple[float, float]] = {}
    with _Quit() as quit:
        while True:
            live = [j for j in await client.list(args.owner) if j.state in LIVE_STATES]
            shown = live[:TOP_MAX_JOBS]
            jobs = await asyncio.gather(*(client.status(j.id) for j in shown))
            read_at, now = time.monotonic(), time.time()
            cpu: dict[str, float | None] = {}
            for job in jobs:
                used = job.usage.cpu_seconds
                if job.id in before:
                    cpu_before, at = before[job.id]
                    cpu[job.id] = render.cpu_percent(used, cpu_before, read_at - at)
                elif job.HasField("started_at"):  # first sight: the average since it started
                    cpu[job.id] = render.cpu_percent(
                        used, 0.0, now - render.seconds(job.started_at)
                    )
            before = {job.id: (job.usage.cpu_seconds, read_at) for job in jobs}
            if args.json:
                print(render.to_json([_top_dict(job, cpu.get(job.id)) for job in jobs]))
            else:
                _draw_top(jobs, cpu, len(live), tty=not once)
            if once or await quit.wait(args.interval):
                return


def _top_dict(job: pb.Job, cpu: float | None) -> dict[str, object]:
    data = render.job_to_dict(job)
    data["cpu_percent"] = None if cpu is None else round(cpu, 1)
    return data


def _draw_top(
    jobs: Sequence[pb.Job], cpu: dict[str, float | None], live: int, *, tty: bool
) -> None:
    import shutil  # not for the one-shot commands: it brings zlib, bz2 and lzma along

    width = shutil.get_terminal_size().columns if tty else 80
    lines = []
    if tty:
        when = time.strftime("%H:%M:%S")
        lines.append(f"{when}  {live} running job{'s' if live != 1 else ''}  (Ctrl-C quits)")
    lines.append(render.top_table(jobs, cpu, width=width))
    if live > len(jobs):
        lines.append(f"... and {live - len(jobs)} more not shown")
    print((CLEAR if tty else "") + "\n".join(lines), flush=True)


async def list_jobs(client: JobClient, args: argparse.Namespace) -> None:
    # One job more than shown says whether older ones remain.
    jobs = await client.list(args.owner, limit=None if args.all else args.limit + 1)
    more = not args.all and len(jobs) > args.limit
    jobs = jobs if args.all else jobs[: args.limit]
    if args.json:
        print(render.to_json([render.job_to_dict(job) for job in jobs]))
        return
    import shutil

    # Cut long commands only for a person at a terminal; a pipe gets whole lines to grep.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(render.job_table(jobs, width=width), flush=True)
    if more:
        note(f"showing the newest {len(jobs)} jobs; older ones exist (--all, --limit N)")


EXIT_INTERRUPTED = 130  # as jobctl.cli's, which this module does not import


class _Interrupts:
    """Ctrl-C during ``jobctl run``: the first stops the job (or detaches), the second kills
    it (grace 0), a third leaves at once. Stops go out as tasks while the output goes on."""

    def __init__(self, client: JobClient, detach: bool) -> None:
        self.client = client
        self.detach = detach
        self.presses = 0
        self.job_id: str | None = None
        self.follower: asyncio.Task[pb.Job] | None = None
        self.stops: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.tell = sys.stderr.isatty()  # keep a redirected stderr the job's bytes only

    def __enter__(self) -> _Interrupts:
        if _catch_ctrl_c():
            self.loop.add_signal_handler(signal.SIGINT, self.pressed)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            self.loop.remove_signal_handler(signal.SIGINT)

    def pressed(self) -> None:
        self.presses += 1
        if self.detach or self.presses > 2:
            # Leave; the next Ctrl-C gets Python's own KeyboardInterrupt.
            self.loop.remove_signal_handler(signal.SIGINT)
        if self.detach:
            if self.follower is not None:
                self.follower.cancel()
            return
        if self.job_id is not None and self.presses <= 2:
            self.stop()

    def stop(self) -> None:
        assert self.job_id is not None
        grace = 0.0 if self.presses >= 2 else None
        if self.tell:
            how = "killing" if grace == 0 else "stopping"
            again = "" if grace == 0 else " (Ctrl-C again to kill it)"
            note(f"{how} job {printable(self.job_id)}{again}")
        task = self.loop.create_task(self._stop(self.job_id, grace))
        self.stops.add(task)

    async def _stop(self, job_id: str, grace: float | None) -> None:
        try:
            await self.client.stop(job_id, grace=grace)
        except ClientError as exc:
            note(f"could not stop job {printable(job_id)}: {exc}")

    async def finish(self) -> None:
        """Wait for the stops sent (they answer once the job has ended)."""
        for task in list(self.stops):
            await task


async def run_job(client: JobClient, args: argparse.Namespace) -> int:
    with _Interrupts(client, args.detach_on_interrupt) as interrupts:
        job = await _start(client, args)
        if render.failed_to_start(job):
            raise CommandFailed(f"job {printable(job.id)}: {render.result_text(job)}")
        interrupts.job_id = job.id
        if interrupts.presses and interrupts.detach:
            return _detached(job.id)
        for _ in range(min(interrupts.presses, 2)):  # Ctrl-C while it was starting
            interrupts.stop()
        follower = asyncio.ensure_future(follow(client, job.id, Output()))
        interrupts.follower = follower
        try:
            final = await follower
        except asyncio.CancelledError:
            if follower.cancelled() and interrupts.detach and interrupts.presses:
                return _detached(job.id)
            raise
        await interrupts.finish()
    if text := render.dropped_note(final):
        note(text)
    if text := render.end_note(final):
        print(f"jobctl: {text}", file=sys.stderr, flush=True)
    return render.exit_status(final)


def _detached(job_id: str) -> int:
    note(f"detached; job {printable(job_id)} keeps running (jobctl logs -f {printable(job_id)})")
    return EXIT_INTERRUPTED


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


COMMANDS: dict[str, Callable[[JobClient, argparse.Namespace], Awaitable[int | None]]] = {
    "start": start,
    "run": run_job,
    "top": top,
    "stop": stop,
    "status": status,
    "list": list_jobs,
    "logs": logs,
}
