"""jobctl's errors and exit codes, and Ctrl-C."""

from __future__ import annotations

import signal
import socket
import ssl
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from jobctl import cli
from jobctl.client import (
    STATUS_ERRORS,
    AddressError,
    CertificateError,
    ClientError,
    ConnectError,
    NotFound,
    ServerError,
    TLSError,
    error_for_status,
    translate_error,
)

# --- errors and exit codes ---------------------------------------------------------------------


def test_every_grpc_status_maps_to_an_error_and_exit_code() -> None:
    assert set(STATUS_ERRORS) == set(Status) - {Status.OK}
    for status in Status:
        exc = error_for_status(status, "why")
        assert isinstance(exc, ServerError)
        assert str(exc).endswith(": why")
        if status is not Status.OK:
            assert exc.status is status
            assert type(exc).__name__.lower() == status.name.replace("_", "").lower()
        expected = cli.EXIT_CONNECT if status is Status.UNAVAILABLE else cli.EXIT_FAILED
        assert cli.exit_code_for(exc) == expected


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (AddressError("x"), cli.EXIT_USAGE),
        (CertificateError("x"), cli.EXIT_USAGE),
        (ConnectError("x", server="h:1"), cli.EXIT_CONNECT),
        (TLSError("x", server="h:1"), cli.EXIT_CONNECT),
        (ClientError("x"), cli.EXIT_FAILED),
        (RuntimeError("x"), cli.EXIT_FAILED),
    ],
)
def test_exit_codes_of_local_errors(exc: BaseException, code: int) -> None:
    assert cli.exit_code_for(exc) == code


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (GRPCError(Status.NOT_FOUND, "job 1 not found"), NotFound, "not found: job 1 not found"),
        (GRPCError(Status.UNAVAILABLE), ServerError, "unavailable"),
        (
            ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)"),
            ConnectError,
            "cannot connect to h:9: Connection refused",
        ),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 9)"
            ),
            ConnectError,
            "cannot connect to h:9: Connection refused",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            ConnectError,
            "cannot connect to h:9: Name or service not known",
        ),
        (
            ConnectionResetError(104, "reset"),
            ConnectError,
            "connection to h:9 broke: Connection reset by peer",
        ),
        (
            StreamTerminatedError("Connection lost"),
            ConnectError,
            "connection to h:9 broke: Connection lost",
        ),
        (
            ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] unknown ca"),
            TLSError,
            "TLS handshake failed with h:9: [SSL: TLSV1_ALERT_UNKNOWN_CA] unknown ca",
        ),
        (ProtocolError("bad"), ClientError, "gRPC protocol error talking to h:9: bad"),
    ],
)
def test_translate_error(exc: Exception, kind: type[ClientError], text: str) -> None:
    translated = translate_error(exc, "h:9")
    assert isinstance(translated, kind)
    assert str(translated) == text


def test_translate_error_hints_at_a_refused_certificate() -> None:
    text = str(translate_error(StreamTerminatedError("Connection lost"), "h:9", answered=False))
    assert text.startswith("connection to h:9 closed before any answer: Connection lost (")
    assert "certificate" in text


def test_server_error_text() -> None:
    assert str(NotFound("job 1234 not found")) == "not found: job 1234 not found"
    assert str(error_for_status(Status.PERMISSION_DENIED)) == "permission denied"




@pytest.mark.parametrize(
    ("on_entry", "caught"),
    [(signal.default_int_handler, True), (signal.SIG_DFL, True), (signal.SIG_IGN, False)],
)
def test_ctrl_c_is_taken_over_unless_it_came_ignored(on_entry: Any, caught: bool) -> None:
    from jobctl import commands

    before = signal.signal(signal.SIGINT, on_entry)
    try:
        assert commands._catch_ctrl_c() is caught
    finally:
        signal.signal(signal.SIGINT, before)
