"""The daemon's JSON log lines: one object per line, extra fields kept, UTC times."""

from __future__ import annotations

import json
import logging

from jobd.logs import JSONFormatter


def record(created: float, msg: str = "job %s ended", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("jobd.jobs.manager", logging.INFO, "", 0, msg, ("abc",), None)
    rec.created, rec.msecs = created, (created - int(created)) * 1000
    rec.__dict__.update(extra)
    return rec


def test_a_line_holds_time_level_logger_message_and_the_extra_fields() -> None:
    line = JSONFormatter().format(record(1_700_000_000.25, job="abc", identity=["client_0"]))
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z", "level": "info", "logger": "jobd.jobs.manager",
        "msg": "job abc ended", "job": "abc", "identity": ["client_0"],
    }


def test_each_second_gets_its_own_time_though_the_text_is_kept_for_the_next_line() -> None:
    formatter = JSONFormatter()
    times = [json.loads(formatter.format(record(t)))["time"]
             for t in (1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5, 1_699_999_999.0)]
    assert times == ["2023-11-14T22:13:20.999Z", "2023-11-14T22:13:21.000Z",
                     "2023-11-14T22:13:21.500Z", "2023-11-14T22:13:19.000Z"]


def test_what_json_cannot_hold_is_written_as_text() -> None:
    line = JSONFormatter().format(record(0.0, peer=("127.0.0.1", 5), where=object))
    assert json.loads(line)["where"] == str(object)
