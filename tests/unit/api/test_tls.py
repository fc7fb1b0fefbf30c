"""Tests of jobd.api.tls: the TLS 1.3 suite pin, mutual authentication and what gets refused.

Handshakes run against a one-connection server on 127.0.0.1 in a thread, so the server's own
verdict (the exception its handshake raised) can be asserted, not just the client's view: in
TLS 1.3 the client finishes its handshake before the server has checked the client certificate.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobd.api import tls
from jobd.api.tls import CIPHER_SUITE, TLSConfigError

# Generous: a loaded CI machine must never turn a slow handshake into a false failure.
TIMEOUT = 10.0
JOIN_TIMEOUT = 3 * TIMEOUT
ACCEPTED = b"ok\n"

# OpenSSL X509_V_ERR_* codes the server reports for refused client certificates.
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_INVALID_PURPOSE = 26

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Path
    client: Path


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> Pki:
    files = Pki(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "client_0.pem")
    ca.cert_pem.write_to_path(files.ca)
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        files.server
    )
    # Underscores are not valid in DNS SANs, so the client identity lives only in the CN,
    # which is also where jobd reads it from.
    ca.issue_cert(common_name="client_0").private_key_and_cert_chain_pem.write_to_path(files.client)
    return files


def issue_leaf(
    ca: trustme.CA,
    path: Path,
    common_name: str,
    eku: list[x509.ObjectIdentifier] | None,
    dns_name: str | None = None,
) -> Path:
    """Write a cert+key PEM signed by ``ca`` with exactly the given EKU (None: no extension).

    trustme always grants clientAuth, serverAuth and codeSigning, so certificates that lack a
    purpose have to be built by hand.
    """
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if dns_name is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def bare_client_context(cafile: Path, certfile: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.3 client that trusts ``cafile`` but is otherwise not built by jobd.api.tls."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(cafile))
    if certfile is not None:
        ctx.load_cert_chain(str(certfile))
    return ctx


# --- a one-connection TLS server in a thread ----------------------------------------------


@dataclass
class ServerOutcome:
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    peer_cn: str | None = None
    error: Exception | None = None


class OneShotServer:
    """Accepts one connection on 127.0.0.1, handshakes, replies ACCEPTED, records the outcome."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._ctx = ctx
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TIMEOUT)
        self.port: int = self._listener.getsockname()[1]
        self._outcome = ServerOutcome()
        self._thread = threading.Thread(target=self._serve, name="tls-test-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError as exc:  # timed out, or close() shut the listener down
            self._outcome.error = exc
            return
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                with self._ctx.wrap_socket(conn, server_side=True) as sock:
                    cipher = sock.cipher()
                    self._outcome.version = sock.version()
                    self._outcome.cipher = cipher[0] if cipher else None
                    self._outcome.alpn = sock.selected_alpn_protocol()
                    self._outcome.peer_cn = tls.common_name(sock.getpeercert())
                    tls.check_negotiated(sock)
                    sock.sendall(ACCEPTED)
                    _drain(sock)
            except Exception as exc:  # the outcome under test, asserted by the test itself
                self._outcome.error = exc

    def outcome(self) -> ServerOutcome:
        """Wait until the one connection has been dealt with."""
        self._thread.join(JOIN_TIMEOUT)
        assert not self._thread.is_alive(), "the test server is stuck"
        return self._outcome

    def close(self) -> None:
        # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(JOIN_TIMEOUT)
        assert not self._thread.is_alive(), "the test server thread did not exit"


def _drain(sock: ssl.SSLSocket) -> None:
    # Wait for the peer to hang up so our close cannot race ahead of its read with a RST; how
    # it hangs up (close_notify or not) is not what these tests are about.
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[OneShotServer] = []

    def start(ctx: ssl.SSLContext) -> OneShotServer:
        server = OneShotServer(ctx)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@dataclass
class ClientResult:
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    reply: bytes = b""
    error: Exception | None = None


def connect(ctx: ssl.SSLContext, port: int, server_hostname: str = "localhost") -> ClientResult:
    """Handshake with the test server and read its reply; failures are returned, not raised."""
    result = ClientResult()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname=server_hostname) as sock,
        ):
            cipher = sock.cipher()
            result.version = sock.version()
            result.cipher = cipher[0] if cipher else None
            result.alpn = sock.selected_alpn_protocol()
            tls.check_negotiated(sock)
            # In TLS 1.3 a refused client certificate only shows up here, as an alert.
            while len(result.reply) < len(ACCEPTED):
                chunk = sock.recv(len(ACCEPTED) - len(result.reply))
                if not chunk:
                    break
                result.reply += chunk
    except (OSError, TLSConfigError) as exc:
        result.error = exc
    return result


def assert_refused_by_server(outcome: ServerOutcome, client: ClientResult) -> None:
    assert client.reply != ACCEPTED
    assert client.error is not None
    assert outcome.error is not None


# --- the suite pin ------------------------------------------------------------------------


def test_pin_leaves_exactly_aes_256_gcm() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Without this precondition the test would pass on an OpenSSL that offers only one suite.
    assert len(tls.tls13_suites(ctx)) > 1
    tls.pin_tls13_suite(ctx)
    assert tls.tls13_suites(ctx) == ["TLS_AES_256_GCM_SHA384"]


@pytest.mark.parametrize("factory", [tls.server_context, tls.client_context])
def test_contexts_are_tls13_only_pinned_and_verifying(pki: Pki, factory: Any) -> None:
    cert = pki.server if factory is tls.server_context else pki.client
    ctx: ssl.SSLContext = factory(pki.ca, cert)
    assert tls.tls13_suites(ctx) == [CIPHER_SUITE]
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_pin_other_valid_suite() -> None:
    # The pin is not hard-wired to one name: it really drives SSL_CTX_set_ciphersuites.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.pin_tls13_suite(ctx, "TLS_CHACHA20_POLY1305_SHA256")
    assert tls.tls13_suites(ctx) == ["TLS_CHACHA20_POLY1305_SHA256"]


def test_pin_unknown_suite_raises() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(TLSConfigError, match="TLS_NOPE"):
        tls.pin_tls13_suite(ctx, "TLS_NOPE")


@pytest.mark.parametrize("suite", ["", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"])
def test_pin_read_back_rejects_anything_but_one_suite(suite: str) -> None:
    # OpenSSL accepts both strings; only the read-back through get_ciphers() catches them.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(TLSConfigError, match="after pinning"):
        tls.pin_tls13_suite(ctx, suite)


# --- check_negotiated and common_name -----------------------------------------------------


class FakeSSLObject:
    def __init__(self, version: str | None, cipher: tuple[str, str, int] | None) -> None:
        self._version = version
        self._cipher = cipher

    def version(self) -> str | None:
        return self._version

    def cipher(self) -> tuple[str, str, int] | None:
        return self._cipher


def test_check_negotiated_accepts_the_pinned_suite() -> None:
    tls.check_negotiated(FakeSSLObject("TLSv1.3", (CIPHER_SUITE, "TLSv1.3", 256)))


@pytest.mark.parametrize(
    ("version", "cipher"),
    [
        ("TLSv1.3", ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)),
        ("TLSv1.3", ("TLS_CHACHA20_POLY1305_SHA256", "TLSv1.3", 256)),
        ("TLSv1.2", ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2", 256)),
        ("TLSv1.3", None),
        (None, None),
    ],
)
def test_check_negotiated_refuses_anything_else(
    version: str | None, cipher: tuple[str, str, int] | None
) -> None:
    with pytest.raises(TLSConfigError, match=r"^negotiated .*, expected .*TLS_AES_256_GCM_SHA384"):
        tls.check_negotiated(FakeSSLObject(version, cipher))


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ({"subject": ((("commonName", "client_0"),),)}, "client_0"),
        (
            {
                "subject": (
                    (("organizationName", "jobd"),),
                    (("commonName", "client_1"),),
                )
            },
            "client_1",
        ),
        ({"subject": ((("organizationName", "jobd"),),)}, None),
        ({"subject": ()}, None),
        ({}, None),
        (None, None),
        # Ambiguous identities: two CNs in separate RDNs, or two in one multi-valued RDN.
        ({"subject": ((("commonName", "admin"),), (("commonName", "client_0"),))}, None),
        ({"subject": ((("commonName", "admin"), ("commonName", "client_0")),)}, None),
    ],
)
def test_common_name(cert: dict[str, Any] | None, expected: str | None) -> None:
    assert tls.common_name(cert) == expected


# --- handshakes ---------------------------------------------------------------------------


def test_mutual_tls_handshake_negotiates_tls13_aes_256_gcm(pki: Pki, serve: Any) -> None:
    server = serve(tls.server_context(pki.ca, pki.server))
    client = connect(tls.client_context(pki.ca, pki.client), server.port)
    outcome = server.outcome()

    assert outcome.error is None
    assert client.error is None
    assert client.reply == ACCEPTED
    for side in (outcome, client):
        assert side.version == "TLSv1.3"
        assert side.cipher == CIPHER_SUITE
        assert side.alpn == "h2"
    assert outcome.peer_cn == "client_0"


def test_client_connects_by_ip_address(pki: Pki, serve: Any) -> None:
    # check_hostname also matches IP SANs: jobctl may be pointed at 127.0.0.1.
    server = serve(tls.server_context(pki.ca, pki.server))
    client = connect(tls.client_context(pki.ca, pki.client), server.port, "127.0.0.1")
    assert client.error is None
    assert server.outcome().error is None


def test_refuses_client_without_certificate(pki: Pki, serve: Any) -> None:
    server = serve(tls.server_context(pki.ca, pki.server))
    ctx = bare_client_context(pki.ca)
    tls.pin_tls13_suite(ctx)
    client = connect(ctx, server.port)
    outcome = server.outcome()

    assert_refused_by_server(outcome, client)
    assert isinstance(outcome.error, ssl.SSLError)
    assert outcome.error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


def test_refuses_client_certificate_from_another_ca(pki: Pki, serve: Any, tmp_path: Path) -> None:
    intruder = tmp_path / "intruder.pem"
    trustme.CA().issue_cert(common_name="client_0").private_key_and_cert_chain_pem.write_to_path(
        intruder
    )
    server = serve(tls.server_context(pki.ca, pki.server))
    client = connect(tls.client_context(pki.ca, intruder), server.port)
    outcome = server.outcome()

    assert_refused_by_server(outcome, client)
    assert isinstance(outcome.error, ssl.SSLCertVerificationError)
    assert outcome.error.verify_code == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY


@pytest.mark.parametrize(
    "eku",
    [[ExtendedKeyUsageOID.SERVER_AUTH], [ExtendedKeyUsageOID.CODE_SIGNING]],
    ids=["serverAuth-only", "codeSigning-only"],
)
def test_refuses_client_certificate_without_client_auth_eku(
    pki: Pki, serve: Any, ca: trustme.CA, tmp_path: Path, eku: list[x509.ObjectIdentifier]
) -> None:
    # OpenSSL verifies a client chain with the "sslclient" purpose on the server side, so
    # Purpose.CLIENT_AUTH is enforced: a server certificate cannot log in as a client.
    cert = issue_leaf(ca, tmp_path / "no-client-auth.pem", "client_0", eku)
    server = serve(tls.server_context(pki.ca, pki.server))
    client = connect(tls.client_context(pki.ca, cert), server.port)
    outcome = server.outcome()

    assert_refused_by_server(outcome, client)
    assert isinstance(outcome.error, ssl.SSLCertVerificationError)
    assert outcome.error.verify_code == X509_V_ERR_INVALID_PURPOSE


@pytest.mark.parametrize(
    "eku", [[ExtendedKeyUsageOID.CLIENT_AUTH], None], ids=["clientAuth", "no-EKU-extension"]
)
def test_accepts_client_certificate_allowed_for_client_auth(
    pki: Pki, serve: Any, ca: trustme.CA, tmp_path: Path, eku: list[x509.ObjectIdentifier] | None
) -> None:
    # The control for the refusal above (same builder, right purpose), and a record of
    # RFC 5280: a certificate with no EKU extension at all is good for any purpose.
    cert = issue_leaf(ca, tmp_path / "client.pem", "client_0", eku)
    server = serve(tls.server_context(pki.ca, pki.server))
    client = connect(tls.client_context(pki.ca, cert), server.port)
    outcome = server.outcome()

    assert outcome.error is None
    assert client.reply == ACCEPTED
    assert outcome.peer_cn == "client_0"


def test_client_refuses_server_certificate_without_server_auth_eku(
    pki: Pki, serve: Any, ca: trustme.CA, tmp_path: Path
) -> None:
    # The mirror image: a stolen client certificate cannot impersonate the daemon.
    cert = issue_leaf(
        ca, tmp_path / "server.pem", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], "localhost"
    )
    server = serve(tls.server_context(pki.ca, cert))
    client = connect(tls.client_context(pki.ca, pki.client), server.port)
    server.outcome()

    assert isinstance(client.error, ssl.SSLCertVerificationError)
    assert client.error.verify_code == X509_V_ERR_INVALID_PURPOSE


def test_client_refuses_server_certificate_for_another_host(
    pki: Pki, serve: Any, ca: trustme.CA, tmp_path: Path
) -> None:
    other_host = tmp_path / "other-host.pem"
    ca.issue_cert("jobd.example.org").private_key_and_cert_chain_pem.write_to_path(other_host)
    server = serve(tls.server_context(pki.ca, other_host))
    client = connect(tls.client_context(pki.ca, pki.client), server.port)
    server.outcome()

    assert isinstance(client.error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(client.error.verify_message)


@pytest.fixture
def system_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A CA that OpenSSL's default verify paths (the "system store") trust for this test."""
    system = trustme.CA()
    system.cert_pem.write_to_path(tmp_path / "system-ca.pem")
    (tmp_path / "system-ca.d").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "system-ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "system-ca.d"))
    return system


def test_server_trusts_only_the_given_ca(
    pki: Pki, serve: Any, system_ca: trustme.CA, tmp_path: Path
) -> None:
    intruder = tmp_path / "intruder.pem"
    system_ca.issue_cert(common_name="client_0").private_key_and_cert_chain_pem.write_to_path(
        intruder
    )
    server = serve(tls.server_context(pki.ca, pki.server))
    client = connect(tls.client_context(pki.ca, intruder), server.port)
    outcome = server.outcome()

    assert_refused_by_server(outcome, client)
    assert isinstance(outcome.error, ssl.SSLCertVerificationError)


def test_client_trusts_only_the_given_ca(
    pki: Pki, serve: Any, system_ca: trustme.CA, tmp_path: Path
) -> None:
    impostor = tmp_path / "impostor.pem"
    system_ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(impostor)
    server = serve(tls.server_context(pki.ca, impostor))
    client = connect(tls.client_context(pki.ca, pki.client), server.port)
    server.outcome()

    assert isinstance(client.error, ssl.SSLCertVerificationError)


# --- foreign clients: openssl s_client ----------------------------------------------------


def s_client(pki: Pki, port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "s_client",
            "-connect", f"127.0.0.1:{port}",
            "-servername", "localhost",
            "-CAfile", str(pki.ca),
            "-verify_return_error",
            # Always present a good client certificate, so that the protocol or suite under
            # test is the only reason for a refusal.
            "-cert", str(pki.client),
            *options,
        ],
        input="",  # EOF on stdin: s_client hangs up right after the handshake
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
        check=False,
    )  # fmt: skip


@needs_openssl
def test_s_client_with_the_pinned_suite_is_accepted(pki: Pki, serve: Any) -> None:
    # The control for the refusals below: same command line, the one allowed suite.
    server = serve(tls.server_context(pki.ca, pki.server))
    proc = s_client(pki, server.port, "-tls1_3", "-ciphersuites", CIPHER_SUITE)
    outcome = server.outcome()

    assert outcome.error is None
    assert outcome.cipher == CIPHER_SUITE
    assert proc.returncode == 0, proc.stderr
    assert f"Cipher is {CIPHER_SUITE}" in proc.stdout


@needs_openssl
@pytest.mark.parametrize(
    ("options", "server_reason", "alert"),
    [
        (("-tls1_2",), "UNSUPPORTED_PROTOCOL", "alert protocol version"),
        (
            ("-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"),
            "NO_SHARED_CIPHER",
            "alert handshake failure",
        ),
        (
            ("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"),
            "NO_SHARED_CIPHER",
            "alert handshake failure",
        ),
    ],
    ids=["tls1.2", "aes128", "chacha20"],
)
def test_s_client_refused(
    pki: Pki, serve: Any, options: tuple[str, ...], server_reason: str, alert: str
) -> None:
    server = serve(tls.server_context(pki.ca, pki.server))
    proc = s_client(pki, server.port, *options)
    outcome = server.outcome()

    assert isinstance(outcome.error, ssl.SSLError)
    assert outcome.error.reason == server_reason
    # s_client exits 1 on a failed handshake and says "Cipher is (NONE)". In TLS 1.3 a
    # "Cipher is <suite>" line alone does not prove acceptance: the client prints it before
    # the server has judged the client certificate.
    assert proc.returncode == 1
    assert "Cipher is (NONE)" in proc.stdout
    assert alert in proc.stderr


# --- configuration errors -----------------------------------------------------------------

GARBLED = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("factory", [tls.server_context, tls.client_context])
@pytest.mark.parametrize("which", ["ca", "cert"])
@pytest.mark.parametrize("problem", ["missing", "garbled", "empty"])
def test_bad_file_raises_with_its_name(
    pki: Pki, tmp_path: Path, factory: Any, which: str, problem: str
) -> None:
    bad = tmp_path / f"{problem}-{which}.pem"
    if problem == "garbled":
        bad.write_text(GARBLED)
    elif problem == "empty":
        bad.write_text("")
    good_cert = pki.server if factory is tls.server_context else pki.client
    args = (bad, good_cert) if which == "ca" else (pki.ca, bad)
    with pytest.raises(TLSConfigError) as info:
        factory(*args)
    assert str(bad) in str(info.value)


def test_separate_key_file_that_does_not_match_raises(pki: Pki, tmp_path: Path) -> None:
    cert_only = tmp_path / "cert-only.pem"
    key_only = tmp_path / "other-key.pem"
    server_pem = pki.server.read_text()
    cert_only.write_text(server_pem[server_pem.index("-----BEGIN CERTIFICATE-----") :])
    client_pem = pki.client.read_text()
    key_only.write_text(client_pem[: client_pem.index("-----BEGIN CERTIFICATE-----")])
    with pytest.raises(TLSConfigError) as info:
        tls.server_context(pki.ca, cert_only, key_only)
    assert str(cert_only) in str(info.value)
    assert str(key_only) in str(info.value)
