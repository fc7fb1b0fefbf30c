"""The job model: the transition table over every (state, event), results, and Job's methods."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from jobd.model.errors import IllegalTransition
from jobd.model.job import (
    SHUTDOWN,
    TRANSITIONS,
    Event,
    Job,
    JobSpec,
    Outcome,
    Result,
    State,
    result_of_exit,
    signal_name,
    transition,
)

# The documented machine (module docstring of jobd.model.job), written out independently of
# jobd.model.job.TRANSITIONS so that a change to the table has to be a deliberate one.
DOCUMENTED: dict[tuple[State, Event], State] = {
    (State.STARTING, Event.SPAWNED): State.RUNNING,
    (State.STARTING, Event.SPAWN_FAILED): State.FINISHED,
    (State.RUNNING, Event.STOP): State.STOPPING,
    (State.RUNNING, Event.EXITED): State.FINISHED,
    (State.STOPPING, Event.EXITED): State.FINISHED,
    # lost: from any live state
    (State.STARTING, Event.LOST): State.FINISHED,
    (State.RUNNING, Event.LOST): State.FINISHED,
    (State.STOPPING, Event.LOST): State.FINISHED,
}

ALL_PAIRS = list(itertools.product(State, Event))
LEGAL = [pair for pair in ALL_PAIRS if pair in DOCUMENTED]
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in DOCUMENTED]


def _id(pair: tuple[State, Event]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


def make_job(state: State = State.STARTING, **kwargs: object) -> Job:
    return Job(id="job-1", owner="alice", spec=JobSpec(("true",)), state=state, **kwargs)  # type: ignore[arg-type]


# How each event is applied through Job's own methods.
APPLY: dict[Event, Callable[[Job], None]] = {
    Event.SPAWNED: lambda job: job.spawned(4242),
    Event.SPAWN_FAILED: lambda job: job.spawn_failed("cannot execute 'x': no such file"),
    Event.STOP: lambda job: job.stop("bob"),
    Event.EXITED: lambda job: job.exited(0),
    Event.LOST: lambda job: job.lost("jobd restarted while it ran"),
}


def test_the_table_is_the_documented_machine() -> None:
    assert dict(TRANSITIONS) == DOCUMENTED
    # Nothing leaves FINISHED.
    assert not [pair for pair in TRANSITIONS if pair[0] is State.FINISHED]
    assert len(ALL_PAIRS) == len(LEGAL) + len(ILLEGAL) == len(State) * len(Event)


@pytest.mark.parametrize("pair", LEGAL, ids=_id)
def test_transition_legal(pair: tuple[State, Event]) -> None:
    assert transition(*pair) is DOCUMENTED[pair]


@pytest.mark.parametrize("pair", ILLEGAL, ids=_id)
def test_transition_illegal_raises(pair: tuple[State, Event]) -> None:
    state, event = pair
    with pytest.raises(IllegalTransition) as info:
        transition(state, event)
    assert str(info.value) == f"{event.value} is not allowed in state {state.value}"


@pytest.mark.parametrize("pair", LEGAL, ids=_id)
def test_job_method_legal_moves_to_next_state(pair: tuple[State, Event]) -> None:
    state, event = pair
    job = make_job(state)
    APPLY[event](job)
    assert job.state is DOCUMENTED[pair]
    assert job.finished is (job.state is State.FINISHED)
    if job.finished:
        assert job.result is not None
        assert job.pid is None
        assert job.ended_at is not None
    else:
        assert job.result is None
        assert job.ended_at is None


@pytest.mark.parametrize("pair", ILLEGAL, ids=_id)
def test_job_method_illegal_leaves_job_untouched(pair: tuple[State, Event]) -> None:
    state, event = pair
    earlier = Result(Outcome.EXITED, "exited with code 0", 0)
    result = earlier if state is State.FINISHED else None
    job = make_job(state, result=result, pid=None if result else 17, stopped_by="carol")
    before = replace(job)
    with pytest.raises(IllegalTransition):
        APPLY[event](job)
    assert job == before
    assert job.state is state
    assert job.result is result


# --- result_of_exit ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "stopped_by", "expected"),
    [
        (0, "", Result(Outcome.EXITED, "exited with code 0", exit_code=0)),
        (3, "", Result(Outcome.EXITED, "exited with code 3", exit_code=3)),
        (-9, "", Result(Outcome.SIGNALED, "killed by SIGKILL", signal=9)),
        (-15, "", Result(Outcome.SIGNALED, "killed by SIGTERM", signal=15)),
        (
            0,
            "alice",
            Result(Outcome.STOPPED, "stopped by alice (exited with code 0)", 0, None, "alice"),
        ),
        (
            143,
            "alice",
            Result(Outcome.STOPPED, "stopped by alice (exited with code 143)", 143, None, "alice"),
        ),
        (
            -15,
            "alice",
            Result(Outcome.STOPPED, "stopped by alice (killed by SIGTERM)", None, 15, "alice"),
        ),
        (
            -9,
            SHUTDOWN,
            Result(
                Outcome.STOPPED, "stopped by jobd (shutdown) (killed by SIGKILL)", None, 9, SHUTDOWN
            ),
        ),
        (-100, "", Result(Outcome.SIGNALED, "killed by signal 100", signal=100)),
    ],
)
def test_result_of_exit(returncode: int, stopped_by: str, expected: Result) -> None:
    assert result_of_exit(returncode, stopped_by) == expected


def test_signal_name() -> None:
    assert signal_name(signal.SIGKILL) == "SIGKILL"
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(200) == "signal 200"


# --- Job's methods ----------------------------------------------------------------------


def test_new_job_defaults() -> None:
    before = time.time()
    job = Job(id="j", owner="alice", spec=JobSpec(("true",)))
    after = time.time()
    assert job.state is State.STARTING
    assert job.result is None
    assert before <= job.created_at <= after
    assert (job.started_at, job.ended_at, job.pid, job.stopped_by, job.output_bytes) == (
        None, None, None, "", 0,
    )  # fmt: skip
    assert job.spec.cwd == "/"
    assert dict(job.spec.env) == {}


def test_spawned_sets_pid_and_started_at() -> None:
    job = make_job()
    before = time.time()
    job.spawned(1234)
    after = time.time()
    assert job.state is State.RUNNING
    assert job.pid == 1234
    assert job.started_at is not None and before <= job.started_at <= after
    assert job.ended_at is None and job.result is None


def test_spawn_failed_records_failure() -> None:
    job = make_job()
    before = time.time()
    job.spawn_failed("cannot execute 'nope': no such file")
    after = time.time()
    assert job.state is State.FINISHED
    assert job.result == Result(Outcome.FAILED_TO_START, "cannot execute 'nope': no such file")
    assert job.ended_at is not None and before <= job.ended_at <= after
    assert job.started_at is None
    assert job.pid is None


def test_exit_after_stop_is_stopped_by_whoever_asked() -> None:
    job = make_job()
    job.spawned(99)
    job.stop("bob")
    assert job.state is State.STOPPING
    assert job.stopped_by == "bob"
    assert job.pid == 99  # still running until it exits
    before = time.time()
    job.exited(-signal.SIGTERM)
    after = time.time()
    assert job.state is State.FINISHED
    assert job.result == Result(
        Outcome.STOPPED, "stopped by bob (killed by SIGTERM)", None, 15, "bob"
    )
    assert job.pid is None
    assert job.ended_at is not None and before <= job.ended_at <= after
    assert job.started_at is not None and job.started_at <= job.ended_at


def test_exit_without_stop() -> None:
    job = make_job()
    job.spawned(99)
    job.exited(3)
    assert job.result == Result(Outcome.EXITED, "exited with code 3", exit_code=3)
    assert job.stopped_by == ""


def test_lost_records_message() -> None:
    job = make_job()
    job.spawned(99)
    job.lost("jobd restarted")
    assert job.state is State.FINISHED
    assert job.result == Result(Outcome.LOST, "jobd restarted")
    assert job.pid is None and job.ended_at is not None


def test_second_stop_is_illegal_and_keeps_first_stopper() -> None:
    job = make_job()
    job.spawned(99)
    job.stop("bob")
    with pytest.raises(IllegalTransition):
        job.stop("carol")
    assert job.stopped_by == "bob"
    assert job.state is State.STOPPING


def test_snapshot_does_not_follow_later_events() -> None:
    job = make_job()
    job.spawned(99)
    snap = job.snapshot()
    job.exited(0)
    assert snap.state is State.RUNNING
    assert snap.result is None and snap.pid == 99
    assert job.state is State.FINISHED
    assert snap is not job
