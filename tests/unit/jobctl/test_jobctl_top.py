"""``jobctl top`` and ``status --watch`` without a daemon: CPU%, the table, the arguments."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from jobctl import cli, render
from jobd.v1 import jobs_pb2 as pb

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("now", "before", "elapsed", "percent"),
    [
        (10.0, 9.0, 2.0, 50.0),  # one CPU second in two seconds: half a core
        (10.0, 6.0, 2.0, 200.0),  # two cores busy
        (5.0, 5.0, 2.0, 0.0),  # idle
        (4.0, 5.0, 2.0, 0.0),  # a counter that went back (never negative)
        (5.0, 4.0, 0.0, None),  # no time has passed: unknown, not infinite
        (5.0, 4.0, -1.0, None),
        (5.0, 4.0, float("nan"), None),
    ],
)
def test_cpu_percent(now: float, before: float, elapsed: float, percent: float | None) -> None:
    assert render.cpu_percent(now, before, elapsed) == percent


def job(n: int, argv: list[str], *, mem: int | None = None, cpu: float = 0.0) -> pb.Job:
    usage = pb.Usage(cpu_seconds=cpu, memory_peak_bytes=2**40)  # the peak is not shown
    if mem is not None:
        usage.memory_current_bytes = mem
    return pb.Job(
        id=f"{n:08x}-1111-2222-3333-444455556666",
        owner="a-rather-long-identity-name",
        argv=argv,
        state=pb.JOB_STATE_RUNNING,
        created_at=Timestamp(seconds=int(NOW) - 90),
        usage=usage,
    )


def test_top_table_fits_80_columns() -> None:
    jobs = [
        job(1, ["make", "-j4", *["target"] * 30], mem=12 * 2**20 + 5),
        job(2, ["sleep", "300"]),
    ]
    text = render.top_table(jobs, {jobs[0].id: 153.25}, now=NOW)
    lines = text.splitlines()
    assert len(lines) == 3
    assert all(len(line) <= 80 for line in lines), text
    assert lines[0].split() == ["ID", "OWNER", "CPU%", "MEM", "AGE", "COMMAND"]
    first, second = (line.split() for line in lines[1:])
    assert first[:6] == ["00000001", "a-rather-...", "153.2", "12.0", "MiB", "1m"]
    assert first[6:8] == ["make", "-j4"] and lines[1].endswith("...")
    assert second == ["00000002", "a-rather-...", "-", "-", "1m", "sleep", "300"]


def test_top_table_of_nothing_is_its_header() -> None:
    assert render.top_table([], {}, now=NOW) == "ID  OWNER  CPU%  MEM  AGE  COMMAND"


def test_top_and_watch_arguments() -> None:
    parse = cli.build_parser({}).parse_args
    args = parse(["top"])
    assert (args.once, args.json, args.interval, args.owner) == (False, False, 2.0, "")
    args = parse(["top", "--once", "--interval", "0.5", "--owner", "client_1"])
    assert (args.once, args.interval, args.owner) == (True, 0.5, "client_1")
    args = parse(["status", "--watch", "j1"])
    assert (args.watch, args.interval, args.id) == (True, 2.0, "j1")
    assert parse(["status", "j1"]).watch is False


@pytest.mark.parametrize("value", ["0", "0.01", "-1", "soon", "inf"])
def test_bad_intervals_are_usage_errors(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._main(["top", "--interval", value], environ={}) == cli.EXIT_USAGE
    assert "--interval" in capsys.readouterr().err
