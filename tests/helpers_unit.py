"""Shared helpers for the unit tests: child commands, output collection, a running manager."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from jobd.config import Config
from jobd.jobs.manager import JobManager
from jobd.jobs.output import Chunk, OutputLog, Stream, follow
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import Store
from jobd.jobs.supervisor import JobRunner
from jobd.launch.isolator import Isolator
from jobd.policy.accounts import RunAsPolicy, lookup
from jobd.policy.auth import Role
from jobd.policy.current import CurrentPolicy, Policy
from jobd.policy.isolation import IsolationPolicy, RoleIsolation

# Generous bound for anything that waits on a real process.
PROCESS_TIMEOUT = 15.0


@contextlib.asynccontextmanager
async def running(runner: JobRunner) -> AsyncIterator[JobRunner]:
    """Run ``runner`` as the manager does (spawn, then supervise in a task of its own); on
    leaving, whatever still runs is cancelled (killed and reaped)."""
    with trio.fail_after(PROCESS_TIMEOUT):
        async with trio.open_nursery() as nursery:
            child = runner.spawn()
            if child is not None:
                nursery.start_soon(runner.supervise, child)
            await runner.started.wait()
            try:
                yield runner
            finally:
                nursery.cancel_scope.cancel()


def python(code: str) -> list[str]:
    """argv that runs ``code`` in a fresh interpreter (the one running the tests)."""
    return [sys.executable, "-c", code]


REPO = Path(__file__).resolve().parent.parent


def run_python(
    code: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this checkout importable, ``env`` added to
    this environment; text output captured."""
    return subprocess.run(
        python(code),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)},
        cwd=kwargs.pop("cwd", REPO),
        timeout=60,
        **kwargs,
    )


def config_from(tmp_path: Path, text: str) -> Config:
    """A Config with ``text`` applied as its file."""
    path = tmp_path / "jobd.toml"
    path.write_text(text)
    config = Config()
    config.apply_file(path)
    return config


def by_stream(chunks: list[Chunk]) -> dict[Stream, bytes]:
    """The concatenated bytes of each stream."""
    out = {Stream.STDOUT: b"", Stream.STDERR: b""}
    for c in chunks:
        out[c.stream] += c.data
    return out


async def read_all(path: Path, live: OutputLog | None = None, offset: int = 0) -> list[Chunk]:
    """Every chunk of a log, from ``offset`` until it ends."""
    result: list[Chunk] = []
    async with contextlib.aclosing(follow(path, live, offset)) as chunks:
        async for batch in chunks:
            result.extend(batch)
    return result


async def wait_for_output(
    source: AsyncIterator[list[Chunk]], needle: bytes, stream: Stream = Stream.STDOUT
) -> bytes:
    """Read ``source`` (a follower) until ``stream`` contains ``needle``; return that stream.

    Waits on the follower, which waits on the log's event: no polling.
    """
    seen = b""
    async with contextlib.aclosing(source) as chunks:  # type: ignore[type-var]
        async for batch in chunks:
            seen += b"".join(c.data for c in batch if c.stream is stream)
            if needle in seen:
                return seen
    raise AssertionError(f"output ended without {needle!r}; got {seen!r}")


@contextlib.asynccontextmanager
async def open_manager(
    state_dir: Path, grace: float = 10.0, output_cap: int | None = None, **options: Any
) -> AsyncIterator[JobManager]:
    """A running JobManager on its own state directory and store; ``options`` go to it, but
    ``limits``, ``quotas`` and ``run_as``, which make its policy (``manager.policy``).

    Leaving the block cancels it, which kills and reaps every job, then closes the store.
    """
    # As in harness.Daemon: test jobs run the tests' Python, so as root unless asked, and
    # without the namespaces a user's job requires (this isolator has none to give).
    run_as = options.pop("run_as", RunAsPolicy({Role.USER: lookup("root")}))
    parts = {k: options.pop(k) for k in ("limits", "quotas") if k in options}
    options["policy"] = CurrentPolicy(Policy(run_as=run_as, **parts))
    options.setdefault("isolation", Isolator(IsolationPolicy({Role.USER: RoleIsolation()})))
    state = StateDir(state_dir)
    state.claim()
    store = Store(state.database)
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            async with trio.open_nursery() as nursery:
                manager = JobManager(state, store, grace, output_cap, **options)
                await nursery.start(manager.run)
                try:
                    yield manager
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        store.close()
        state.release()


def process_gone_or_zombie(pid: int) -> bool:
    """True when ``pid`` no longer runs: absent, or a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state in ("Z", "X")


async def wait_process_exit(pid: int) -> None:
    """Wait (on a pidfd, no polling) until ``pid`` has exited; put a ``fail_after`` around it.

    Works for processes that are not our children, e.g. a job's grandchild reparented to init.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
