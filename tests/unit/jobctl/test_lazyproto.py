"""jobctl.lazyproto: protobuf's pure-Python message module loads only if something uses it.

Each case runs in a fresh interpreter: this one has protobuf loaded already.
"""

from __future__ import annotations

import pytest
from google.protobuf.internal import api_implementation
from helpers_unit import run_python

# What jobctl does with messages: build, serialize, parse, print as text and as JSON, and use
# the well-known types (Timestamp) that come with jobs.proto.
USE_MESSAGES = """\
from google.protobuf import json_format
from jobd.v1 import jobs_pb2 as pb
job = pb.Job(id="j1", argv=["true"])
job.created_at.FromSeconds(1700000000)
back = pb.Job.FromString(job.SerializeToString())
assert back == job and back.created_at.ToDatetime().year == 2023, back
assert 'id: "j1"' in str(back)
assert json_format.MessageToDict(back)["createdAt"] == "2023-11-14T22:13:20Z"
"""

DEFER = """\
import sys
from jobctl.lazyproto import PYTHON_MESSAGE, defer_python_message
print(defer_python_message())
"""


def run(code: str, **env: str) -> str:
    """stdout of ``code`` in a fresh interpreter; fails the test on any error."""
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(
    api_implementation.Type() == "python",
    reason="protobuf runs its pure-Python backend here, which needs python_message at once",
)
def test_messages_work_without_loading_python_message() -> None:
    out = run(
        DEFER
        + USE_MESSAGES
        + "print(type(sys.modules[PYTHON_MESSAGE]).__name__,\n"
        + "      'google.protobuf.text_format' in sys.modules)\n"
    )
    assert out.split() == ["True", "_LazyModule", "False"]


def test_the_deferred_module_loads_on_first_use() -> None:
    out = run(
        "from jobctl.lazyproto import defer_python_message\n"
        "defer_python_message()\n"
        "from google.protobuf.internal import python_message\n"
        "print(type(python_message.GeneratedProtocolMessageType).__name__,\n"
        "      type(python_message).__name__)\n"
    )
    assert out.split() == ["type", "module"]


def test_nothing_is_deferred_with_the_pure_python_backend() -> None:
    out = run(
        DEFER + USE_MESSAGES + "print(type(sys.modules[PYTHON_MESSAGE]).__name__)\n",
        PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python",
    )
    assert out.split() == ["False", "module"]


def test_too_late_once_protobuf_is_loaded() -> None:
    out = run(
        "from jobd.v1 import jobs_pb2\n"
        "from jobctl.lazyproto import defer_python_message\n"
        "print(defer_python_message())\n"
    )
    assert out.split() == ["False"]
