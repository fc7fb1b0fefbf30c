"""How jobctl shows jobs, limits, usage and results."""

from __future__ import annotations

import json

import pytest
from fakeserver import NOW, finished, make_job

from jobctl import render
from jobd.v1 import jobs_pb2 as pb

# --- rendering ---------------------------------------------------------------------------------

def test_details_of_a_running_job() -> None:
    text = render.job_details(make_job(), now=NOW)
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert lines["ID"].strip() == "j1"
    assert lines["Owner"].strip() == "alice"
    assert lines["State"].strip() == "running"
    assert lines["Result"].strip() == "-"
    assert lines["Command"].strip() == "sleep 5"
    assert lines["Directory"].strip() == "/srv"
    assert lines["Created"].strip().endswith("(5m ago)")
    assert lines["Started"].strip().endswith("(4m ago)")
    assert lines["Ended"].strip() == "-"
    assert lines["PID"].strip() == "4242"
    assert lines["Account"].strip() == "nobody:nogroup (65534:65534)"
    assert lines["Output"].strip() == "1.5 KiB (1536 bytes)"
    # values line up in one column
    assert len({line.index(line.split()[1]) for line in text.splitlines()}) == 1


def detail_lines(job: pb.Job) -> dict[str, str]:
    text = render.job_details(job, now=NOW)
    # values line up in one column
    assert len({line.index(line.split(":", 1)[1].strip()) for line in text.splitlines()}) == 1
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def test_details_show_only_what_is_set() -> None:
    text = render.job_details(make_job(), now=NOW)
    for label in ("Dropped", "Output error", "Limits", "Usage"):
        assert label not in text
    job = make_job(output_dropped_bytes=3976, output_error="output cap of 1 KiB reached")
    job.limits.memory_bytes = 256 * 2**20
    job.limits.pids = 100
    job.usage.cpu_seconds = 1.234
    job.usage.memory_peak_bytes = 12 * 2**20 + 2**19
    lines = detail_lines(job)
    assert lines["Dropped"] == "3.9 KiB (3976 bytes) of output not kept"
    assert lines["Output error"] == "output cap of 1 KiB reached"
    assert lines["Limits"] == "memory 256 MiB, pids 100"
    assert lines["Usage"] == "cpu 1.23 s, memory peak 12.5 MiB"


@pytest.mark.parametrize(
    ("limits", "text"),
    [
        (
            pb.Limits(
                cpu=0.5,
                memory_bytes=256 * 2**20,
                pids=64,
                io_read_bps=10 * 2**20,
                io_device="254:0",
            ),
            "cpu 0.5, memory 256 MiB, pids 64, io read 10 MiB/s on 254:0",
        ),
        (pb.Limits(cpu=2, memory_bytes=2**30 + 2**29), "cpu 2, memory 1.5 GiB"),
        (
            pb.Limits(io_read_bps=2**20, io_write_bps=512 * 2**10, io_device="8:0"),
            "io read 1 MiB/s, write 512 KiB/s on 8:0",
        ),
        (pb.Limits(io_write_bps=1000), "io write 1000 B/s"),
        (pb.Limits(io_device="\x1b[2J"), "io device on \\x1b[2J"),
        (pb.Limits(pids=4096), "pids 4096"),
        (pb.Limits(), "none"),  # the server reports limits, and there are none
    ],
)
def test_limits_line(limits: pb.Limits, text: str) -> None:
    job = make_job()
    job.limits.CopyFrom(limits)
    assert detail_lines(job)["Limits"] == text


@pytest.mark.parametrize(
    ("usage", "text"),
    [
        (
            pb.Usage(
                cpu_seconds=1.234,
                memory_peak_bytes=round(12.3 * 2**20),
                oom_kills=1,
                pids_limit_hits=3,
            ),
            "cpu 1.23 s, memory peak 12.3 MiB, OOM kills 1, task-limit hits 3",
        ),
        (pb.Usage(), "cpu 0.00 s"),
        (pb.Usage(cpu_seconds=0.004, pids_limit_hits=2), "cpu 0.00 s, task-limit hits 2"),
        (pb.Usage(memory_peak_bytes=0), "cpu 0.00 s, memory peak 0 B"),
    ],
)
def test_usage_line(usage: pb.Usage, text: str) -> None:
    job = make_job()
    job.usage.CopyFrom(usage)
    assert detail_lines(job)["Usage"] == text


def test_details_of_an_oom_killed_job() -> None:
    job = finished(
        outcome=pb.JobResult.OUTCOME_OOM_KILLED,
        signal=9,
        message="killed: out of memory (limit 100 MiB)",
    )
    job.limits.memory_bytes = 100 * 2**20
    job.usage.oom_kills = 1
    job.usage.memory_peak_bytes = 100 * 2**20
    lines = detail_lines(job)
    assert lines["Result"] == "killed: out of memory (limit 100 MiB)"
    assert lines["Limits"] == "memory 100 MiB"
    assert lines["Usage"] == "cpu 0.00 s, memory peak 100 MiB, OOM kills 1"
    assert render.status_line(job) == "j1: killed: out of memory (limit 100 MiB)"


def test_dropped_note() -> None:
    assert render.dropped_note(make_job()) == ""
    job = make_job(output_dropped_bytes=12345, output_error="output cap of 1 GiB reached; later")
    assert render.dropped_note(job) == (
        "output truncated: 12345 bytes dropped (output cap of 1 GiB reached; later)"
    )
    assert render.dropped_note(make_job(output_dropped_bytes=5)) == (
        "output truncated: 5 bytes dropped"
    )


def test_details_of_a_finished_job() -> None:
    job = finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=2, message="exited with code 2")
    text = render.job_details(job, now=NOW)
    assert "Result:    exited with code 2" in text
    assert "PID:       -" in text
    assert "(10s ago)" in text


@pytest.mark.parametrize(
    ("job", "line"),
    [
        (make_job(), "j1: running (pid 4242)"),
        (make_job(state=pb.JOB_STATE_STARTING, pid=0), "j1: starting"),
        (
            finished(
                outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0, message="exited with code 0"
            ),
            "j1: exited with code 0",
        ),
        # the server's message wins; without one, the structured fields are used
        (finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0), "j1: exited with code 0"),
        (finished(outcome=pb.JobResult.OUTCOME_SIGNALED, signal=9), "j1: killed by SIGKILL"),
        (
            finished(outcome=pb.JobResult.OUTCOME_STOPPED, stopped_by="bob", signal=15),
            "j1: stopped by bob",
        ),
        (finished(outcome=pb.JobResult.OUTCOME_FAILED_TO_START), "j1: failed to start"),
        (finished(outcome=pb.JobResult.OUTCOME_LOST), "j1: lost: the daemon died while it ran"),
        (
            finished(outcome=pb.JobResult.OUTCOME_OOM_KILLED),
            "j1: killed by the OOM killer: memory limit reached",
        ),
        (make_job(state=99), "j1: state 99 (pid 4242)"),
    ],
)
def test_status_line(job: pb.Job, line: str) -> None:
    assert render.status_line(job) == line


def test_terminal_escapes_from_the_server_are_neutralised() -> None:
    job = make_job(owner="eve\x1b[2J", argv=["echo", "\x1b]0;pwned\x07", "a\nb"])
    text = render.job_details(job, now=NOW) + render.job_table([job], now=NOW)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "eve\\x1b[2J" in text
    assert len(render.job_table([job], now=NOW).splitlines()) == 2


def test_job_json() -> None:
    job = finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0, message="exited with code 0")
    job.output_bytes = 2**40
    data = json.loads(render.to_json(render.job_to_dict(job)))
    assert data["id"] == "j1"
    assert data["output_bytes"] == 2**40  # a number, not proto3 JSON's quoted 64-bit string
    assert data["pid"] == 0
    assert data["state"] == "JOB_STATE_FINISHED"
    assert data["env"] == {"A": "1"}
    assert data["argv"] == ["sleep", "5"]
    assert data["result"] == {
        "outcome": "OUTCOME_EXITED",
        "exit_code": 0,
        "stopped_by": "",
        "message": "exited with code 0",
    }
    assert data["output_dropped_bytes"] == 0
    assert data["output_error"] == ""
    assert "limits" not in data and "usage" not in data
    job.limits.pids = 10
    job.usage.memory_peak_bytes = 2**33
    data = json.loads(render.to_json(render.job_to_dict(job)))
    assert data["limits"] == {"pids": 10, "io_device": ""}
    assert data["usage"] == {
        "cpu_seconds": 0.0,
        "memory_peak_bytes": 2**33,
        "oom_kills": 0,
        "pids_limit_hits": 0,
    }
    assert data["created_at"].endswith("Z")
    assert list(data)[:3] == ["id", "owner", "argv"]
    running = render.job_to_dict(make_job())
    assert "result" not in running
    assert "ended_at" not in running


def test_table() -> None:
    jobs = [
        make_job(id="b-later", argv=["sh", "-c", "echo " + "x" * 200]),
        finished(outcome=pb.JobResult.OUTCOME_EXITED, exit_code=0, message="exited with code 0"),
    ]
    jobs[0].created_at.FromSeconds(int(NOW) - 5)
    text = render.job_table(jobs, now=NOW, width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "OWNER", "STATE", "RESULT", "AGE", "COMMAND"]
    # in the order given: the server's, newest first
    assert lines[1].split()[:5] == ["b-later", "alice", "running", "-", "5s"]
    assert lines[2].split()[:2] == ["j1", "alice"]
    assert "exited with code 0" in lines[2]
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].endswith("...")
    assert lines[2][lines[0].index("COMMAND") :].startswith("sleep 5")
    assert len(render.job_table(jobs, now=NOW).splitlines()[1]) > 200  # no width: no cut


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3 * 2**20, "3.0 MiB"),
        (2**50, "1024.0 TiB"),
    ],
)
def test_size(n: int, text: str) -> None:
    assert render.size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0s"), (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (7200, "2h"), (90000, "1d")],
)
def test_age(seconds: float, text: str) -> None:
    assert render.age(seconds) == text


def test_iso_time_has_an_offset() -> None:
    text = render.iso_time(NOW)
    assert text[:4] == "2023"
    assert text[19] in "+-Z"


