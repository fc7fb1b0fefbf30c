"""The one module that reaches into grpclib: its check passes on the grpclib installed, names
what a grpclib that moved something no longer has, and the pin says which series is tested."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.protocol import Connection
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Server
from hyperframe.frame import DataFrame

from jobd.api import grpclib_private

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_everything_jobd_and_jobctl_reach_into_is_there() -> None:
    grpclib_private.check_server()
    grpclib_private.check_client()


def test_a_server_that_keeps_no_handlers_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: Server, handlers: object) -> None:  # a release that renamed _handlers
        self.handlers_by_connection = set()  # type: ignore[attr-defined]

    monkeypatch.setattr(Server, "__init__", init)
    with pytest.raises(RuntimeError) as info:
        grpclib_private.check_server()
    message = str(info.value)
    assert "grpclib.server.Server._handlers" in message
    assert "jobd/api/grpclib_private.py needs updating" in message
    grpclib_private.check_client()  # jobctl does not use the server


@pytest.mark.parametrize(("cls", "name"), [(Channel, "_protocol_factory"),
                                           (Connection, "messages_received"),
                                           (H2Stream, "recv_data")])  # fmt: skip
def test_a_client_side_name_that_moved_is_named(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str
) -> None:
    monkeypatch.delattr(cls, name)
    for check in (grpclib_private.check_client, grpclib_private.check_server):
        with pytest.raises(RuntimeError, match=f"{cls.__qualname__}.{name}"):
            check()


def test_grpclib_is_pinned_to_the_series_checked() -> None:
    wanted = [d for d in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
              if d.startswith("grpclib")]  # fmt: skip
    assert wanted == ["grpclib>=0.4.9,<0.5"]
    assert version("grpclib").startswith("0.4.")
    assert grpclib_private.TESTED.startswith("0.4.")


def test_a_data_frames_repr_states_its_length_without_copying_it() -> None:
    grpclib_private.quiet_data_frame_repr()  # as jobctl does on import
    frame = DataFrame(1, data=b"\0" * (1 << 20))
    assert "data=<1048576 bytes>" in repr(frame)
    assert len(repr(frame)) < 200


def test_jobd_says_so_in_one_line_at_start() -> None:
    from jobd.__main__ import _startup_failure

    changed = grpclib_private.GrpclibChanged("grpclib 0.5.0 no longer has what jobd relies on")
    # As serve() raises it: from inside the nurseries, wrapped in exception groups.
    wrapped = BaseExceptionGroup("", [ExceptionGroup("", [changed])])
    assert _startup_failure(wrapped) == str(changed)
