"""The job model: what a job is, the states it moves through, and how it ended.

The state machine is a pure transition table with no I/O: an event that is not legal in the
current state raises :class:`IllegalTransition` and leaves the job untouched. State (where a
job is) and :class:`Result` (how it ended) are separate types.

::

    STARTING --spawned--> RUNNING --stop--> STOPPING
        |                    |                  |
        |                  exited             exited
        |                    v                  v
        +--spawn_failed--> FINISHED <-----------+      (lost: from any live state)
"""

from __future__ import annotations

import enum
import signal as _signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from jobd.model.errors import IllegalTransition
from jobd.model.namespaces import Namespace
from jobd.model.resources import Limits, Usage


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"


class Event(enum.Enum):
    SPAWNED = "spawned"
    SPAWN_FAILED = "spawn_failed"
    STOP = "stop"
    EXITED = "exited"
    LOST = "lost"


TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.STARTING, Event.SPAWNED): State.RUNNING,
    (State.STARTING, Event.SPAWN_FAILED): State.FINISHED,
    (State.STARTING, Event.LOST): State.FINISHED,
    (State.RUNNING, Event.STOP): State.STOPPING,
    (State.RUNNING, Event.EXITED): State.FINISHED,
    (State.RUNNING, Event.LOST): State.FINISHED,
    (State.STOPPING, Event.EXITED): State.FINISHED,
    (State.STOPPING, Event.LOST): State.FINISHED,
}


def transition(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state.value}") from None


class Outcome(enum.Enum):
    EXITED = "exited"
    SIGNALED = "signaled"
    STOPPED = "stopped"
    FAILED_TO_START = "failed_to_start"
    LOST = "lost"
    OOM_KILLED = "oom_killed"


SHUTDOWN = "jobd (shutdown)"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str
    exit_code: int | None = None
    signal: int | None = None
    stopped_by: str = ""


def signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def result_of_exit(returncode: int, stopped_by: str, oom: str = "") -> Result:
    """How a process that ended with ``returncode`` (negative: killed by that signal) ended.

    ``oom`` describes the kernel's OOM kill in the job's group, if there was one: the whole
    group is killed then, so that is how the job ended, whatever the main process saw.
    """
    code = returncode if returncode >= 0 else None
    sig = -returncode if returncode < 0 else None
    how = f"exited with code {code}" if sig is None else f"killed by {signal_name(sig)}"
    if oom:
        return Result(Outcome.OOM_KILLED, f"killed: {oom}", code, sig, stopped_by)
    if stopped_by:
        return Result(Outcome.STOPPED, f"stopped by {stopped_by} ({how})", code, sig, stopped_by)
    if sig is not None:
        return Result(Outcome.SIGNALED, how, None, sig)
    return Result(Outcome.EXITED, how, code)


@dataclass(frozen=True)
class JobSpec:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    # What the request asked for; the job's effective limits are Job.limits.
    limits: LimitRequest = field(default_factory=lambda: LimitRequest())
    # Namespaces asked for; None: the role's default. What the job got is Job.isolation.
    isolation: frozenset[Namespace] | None = None


@dataclass(frozen=True)
class LimitRequest:
    """Limits as a client asked for them: ``None`` takes the daemon's default."""

    cpu: float | None = None
    memory: int | None = None
    io_read_bps: int | None = None
    io_write_bps: int | None = None
    io_device: str = ""
    pids: int | None = None


@dataclass
class Job:
    """One job's record. Only the event methods below change ``state`` and ``result``."""

    id: str
    owner: str
    spec: JobSpec
    state: State = State.STARTING
    result: Result | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None
    stopped_by: str = ""
    output_bytes: int = 0
    output_dropped_bytes: int = 0
    output_error: str = ""
    # procid.identity() of the main process: lets a later daemon find it without PID reuse.
    process_key: str = ""
    # The retention policy deleted the output log; the record stays.
    output_deleted: bool = False
    limits: Limits = field(default_factory=Limits)
    usage: Usage = field(default_factory=Usage)
    # The namespaces the job runs in (its own PID namespace, ...): empty for none.
    isolation: frozenset[Namespace] = frozenset()
    # The Unix account it runs as, as status shows it: "nobody:nogroup (65534:65534)".
    run_as: str = ""
    # The syscall filter it runs under, as status shows it: "none", "default +chroot".
    syscall_filter: str = ""

    def _apply(self, event: Event) -> None:
        self.state = transition(self.state, event)

    def spawned(self, pid: int) -> None:
        self._apply(Event.SPAWNED)
        self.pid = pid
        self.started_at = time.time()

    def spawn_failed(self, message: str) -> None:
        self._apply(Event.SPAWN_FAILED)
        self._finish(Result(Outcome.FAILED_TO_START, message))

    def stop(self, by: str) -> None:
        self._apply(Event.STOP)
        self.stopped_by = by

    def exited(self, returncode: int, oom: str = "") -> None:
        self._apply(Event.EXITED)
        self._finish(result_of_exit(returncode, self.stopped_by, oom))

    def lost(self, message: str) -> None:
        self._apply(Event.LOST)
        self._finish(Result(Outcome.LOST, message))

    def _finish(self, result: Result) -> None:
        self.result = result
        self.ended_at = time.time()
        self.pid = None

    @property
    def finished(self) -> bool:
        return self.state is State.FINISHED

    def snapshot(self) -> Job:
        """A copy that later events do not change (for handing across tasks)."""
        return replace(self)
