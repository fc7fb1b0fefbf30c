"""jobctl.client's fixes to the HTTP/2 stack it runs on."""

from __future__ import annotations

import binascii

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived
from hyperframe.frame import DataFrame

import jobctl.client  # noqa: F401 - imported for what it fixes in hyperframe


def test_a_received_data_frame_is_not_hex_encoded_for_h2s_trace_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[int] = []
    hexlify = binascii.hexlify

    def counting(data: bytes, *args: object) -> bytes:
        encoded.append(len(data))
        return hexlify(data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(binascii, "hexlify", counting)
    client = H2Connection(H2Configuration(client_side=True))
    server = H2Connection(H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                            (":authority", "x")], end_stream=True)  # fmt: skip
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")])
    payload = b"\x00" * 16_000  # within the default frame size and window
    server.send_data(1, payload)
    events = client.receive_data(server.data_to_send())
    received = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert received == payload
    assert [n for n in encoded if n >= len(payload)] == []  # was [16000]: the whole body


def test_a_data_frames_repr_still_says_what_it_holds() -> None:
    shown = repr(DataFrame(3, b"x" * 70_000))
    assert shown == "DataFrame(stream_id=3, flags=[]): data=<70000 bytes>"
