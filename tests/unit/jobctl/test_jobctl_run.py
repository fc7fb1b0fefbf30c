"""``jobctl run`` without a daemon: its arguments and the exit status it hands on."""

from __future__ import annotations

import pytest

from jobctl import cli, render
from jobd.v1 import jobs_pb2 as pb

R = pb.JobResult


def finished(**result: object) -> pb.Job:
    return pb.Job(state=pb.JOB_STATE_FINISHED, result=R(**result))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("job", "code"),
    [
        (finished(outcome=R.OUTCOME_EXITED, exit_code=0), 0),
        (finished(outcome=R.OUTCOME_EXITED, exit_code=7), 7),
        (finished(outcome=R.OUTCOME_EXITED, exit_code=255), 255),
        (finished(outcome=R.OUTCOME_SIGNALED, signal=9), 137),
        (finished(outcome=R.OUTCOME_SIGNALED, signal=15), 143),
        (finished(outcome=R.OUTCOME_STOPPED, signal=15, stopped_by="client_0"), 143),
        (finished(outcome=R.OUTCOME_STOPPED, exit_code=3, stopped_by="client_0"), 3),
        (finished(outcome=R.OUTCOME_OOM_KILLED, signal=9), 137),
        (finished(outcome=R.OUTCOME_OOM_KILLED), 137),
        (finished(outcome=R.OUTCOME_FAILED_TO_START), 1),
        (finished(outcome=R.OUTCOME_LOST), 1),
        (finished(outcome=R.OUTCOME_UNSPECIFIED), 1),
    ],
)
def test_exit_status(job: pb.Job, code: int) -> None:
    assert render.exit_status(job) == code


@pytest.mark.parametrize(
    ("result", "said"),
    [
        (R(outcome=R.OUTCOME_EXITED, exit_code=3, message="exited with code 3"), ""),
        (R(outcome=R.OUTCOME_OOM_KILLED, signal=9,
           message="killed: out of memory (limit 64 MiB)"),
         "job j1 killed: out of memory (limit 64 MiB)"),
        (R(outcome=R.OUTCOME_SIGNALED, signal=11, message="killed by SIGSEGV"),
         "job j1 killed by SIGSEGV"),
        (R(outcome=R.OUTCOME_STOPPED, signal=15, stopped_by="client_0",
           message="stopped by client_0 (killed by SIGTERM)"),
         "job j1 stopped by client_0 (killed by SIGTERM)"),
        (R(outcome=R.OUTCOME_LOST), "job j1 lost: the daemon died while it ran"),
        (R(outcome=R.OUTCOME_SIGNALED, signal=9), "job j1 killed by SIGKILL"),  # no message
    ],
)
def test_run_says_how_a_job_ended_unless_it_exited(result: pb.JobResult, said: str) -> None:
    job = pb.Job(id="j1", state=pb.JOB_STATE_FINISHED, result=result)
    assert render.end_note(job) == said


def test_run_takes_the_options_of_start() -> None:
    args = cli.build_parser({}).parse_args(
        ["run", "--env", "A=1", "--cwd", "/tmp", "--memory", "256M", "--isolate", "pid",
         "--detach-on-interrupt", "--", "make", "-j4"]
    )  # fmt: skip
    assert args.command == "run"
    assert (args.argv, args.env, args.cwd) == (["make", "-j4"], [("A", "1")], "/tmp")
    assert (args.memory, args.isolate, args.detach_on_interrupt) == (256 << 20, ("pid",), True)
    assert cli.build_parser({}).parse_args(["run", "true"]).detach_on_interrupt is False


def test_run_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["run", "--"], environ={}) == cli.EXIT_USAGE
    assert "no command given" in capsys.readouterr().err


def test_help_documents_runs_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["--help"], environ={}) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "jobctl run` exits with the job's own status" in out
    assert "128+N" in out
