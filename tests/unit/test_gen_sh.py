"""Tests of ca/gen.sh: what it writes, that the result is a working PKI, and re-run safety.

Certificates are inspected with the openssl CLI (what gen.sh itself uses) rather than a Python
X.509 library, and the final check is a real TLS 1.3 handshake through jobd.api.tls in memory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest

from jobd.api import tls

GEN_SH = Path(__file__).resolve().parents[2] / "ca" / "gen.sh"
TIMEOUT = 60.0  # per command; generating five EC keys takes well under a second
STANDARD = ["ca.key", "ca.crt", "server.pem", "client_0.pem", "client_1.pem"]
SECRETS = ["ca.key", "server.pem", "client_0.pem", "client_1.pem"]
LEAVES = {"server.pem": "sslserver", "client_0.pem": "sslclient", "client_1.pem": "sslclient"}

SH = shutil.which("sh")
pytestmark = pytest.mark.skipif(
    SH is None or shutil.which("openssl") is None, reason="needs sh and the openssl CLI"
)


def gen(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run gen.sh, require success, return its stdout."""
    proc = run_gen(*args, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_gen(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert SH is not None
    return subprocess.run(
        [SH, str(GEN_SH), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def openssl(*args: str | Path) -> str:
    proc = subprocess.run(
        ["openssl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def ext(cert: Path, *names: str) -> str:
    return openssl("x509", "-in", cert, "-noout", "-ext", ",".join(names))


def subject(cert: Path) -> str:
    return openssl("x509", "-in", cert, "-noout", "-subject", "-nameopt", "RFC2253").strip()


def lifetime_days(cert: Path) -> float:
    dates = dict(
        line.split("=", 1) for line in openssl("x509", "-in", cert, "-noout", "-dates").splitlines()
    )
    seconds = ssl.cert_time_to_seconds(dates["notAfter"]) - ssl.cert_time_to_seconds(
        dates["notBefore"]
    )
    return seconds / 86400


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    out = tmp_path / "ca"
    gen(out)
    return out


def test_writes_the_standard_set(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"  # created on demand
    stdout = gen(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(STANDARD)
    # One summary line per file written.
    wrote = [line for line in stdout.splitlines() if " wrote " in line]
    assert len(wrote) == len(STANDARD)
    for name in STANDARD:
        assert any(str(out / name) in line for line in wrote), name


def test_private_keys_are_owner_only(pki: Path) -> None:
    for name in SECRETS:
        assert stat.S_IMODE((pki / name).stat().st_mode) == 0o600, name
    # The CA certificate is public: every jobctl user must be able to read it.
    assert stat.S_IMODE((pki / "ca.crt").stat().st_mode) == 0o644


def test_ca_certificate(pki: Path) -> None:
    ca = pki / "ca.crt"
    text = ext(ca, "basicConstraints", "keyUsage", "subjectKeyIdentifier")
    assert "X509v3 Basic Constraints: critical" in text
    assert "CA:TRUE" in text
    assert "X509v3 Key Usage: critical" in text
    assert "Certificate Sign, CRL Sign" in text
    assert "Digital Signature" not in text
    assert "X509v3 Subject Key Identifier" in text
    assert subject(ca) == "subject=CN=jobd CA"
    assert 3649 <= lifetime_days(ca) <= 3651
    # Self-signed, so it verifies against itself.
    assert openssl("verify", "-CAfile", ca, ca).strip() == f"{ca}: OK"


def test_keys_are_p256_and_signatures_sha256(pki: Path) -> None:
    for name in ["ca.key", "server.pem", "client_0.pem", "client_1.pem"]:
        key_text = openssl("pkey", "-in", pki / name, "-noout", "-text_pub")
        assert "NIST CURVE: P-256" in key_text, name
    for name in ["ca.crt", *LEAVES]:
        cert_text = openssl("x509", "-in", pki / name, "-noout", "-text")
        assert "Signature Algorithm: ecdsa-with-SHA256" in cert_text, name


def test_each_pem_holds_a_certificate_and_its_own_key(pki: Path) -> None:
    for name in LEAVES:
        pem = pki / name
        assert openssl("x509", "-in", pem, "-noout", "-pubkey") == openssl(
            "pkey", "-in", pem, "-pubout"
        ), name
    ca_key_pub = openssl("pkey", "-in", pki / "ca.key", "-pubout")
    assert openssl("x509", "-in", pki / "ca.crt", "-noout", "-pubkey") == ca_key_pub


def test_serials_are_random(pki: Path) -> None:
    serials = [
        openssl("x509", "-in", pki / name, "-noout", "-serial").strip().removeprefix("serial=")
        for name in ["ca.crt", *LEAVES]
    ]
    assert len(set(serials)) == len(serials)
    # At least 64 random bits (CA/Browser Forum baseline), not a counter.
    assert all(len(s.lstrip("0")) >= 16 for s in serials), serials


@pytest.mark.parametrize(("name", "purpose"), LEAVES.items())
def test_leaf_verifies_against_the_ca_for_its_purpose(pki: Path, name: str, purpose: str) -> None:
    ca, leaf = pki / "ca.crt", pki / name
    out = openssl("verify", "-CAfile", ca, "-purpose", purpose, leaf)
    assert out.strip() == f"{leaf}: OK"
    # The EKU is narrow: a server certificate cannot log in as a client and vice versa.
    other = "sslclient" if purpose == "sslserver" else "sslserver"
    proc = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), "-purpose", other, str(leaf)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode != 0
    assert "unsuitable certificate purpose" in proc.stdout + proc.stderr


def test_server_certificate(pki: Path) -> None:
    server = pki / "server.pem"
    assert subject(server) == "subject=CN=localhost"
    text = ext(server, "subjectAltName", "extendedKeyUsage", "keyUsage", "basicConstraints")
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text
    assert "TLS Web Client Authentication" not in text
    assert "Digital Signature" in text
    assert "CA:FALSE" in text
    assert 364 <= lifetime_days(server) <= 366


@pytest.mark.parametrize("name", ["client_0", "client_1"])
def test_client_certificate(pki: Path, name: str) -> None:
    client = pki / f"{name}.pem"
    assert subject(client) == f"subject=CN={name}"
    text = ext(client, "extendedKeyUsage", "keyUsage", "basicConstraints")
    assert "TLS Web Client Authentication" in text
    assert "TLS Web Server Authentication" not in text
    assert "Digital Signature" in text
    assert "CA:FALSE" in text
    assert 364 <= lifetime_days(client) <= 366


def test_leaves_name_the_ca_key_as_their_authority(pki: Path) -> None:
    ca_ski = ext(pki / "ca.crt", "subjectKeyIdentifier").splitlines()[1].strip()
    for name in LEAVES:
        aki = ext(pki / name, "authorityKeyIdentifier")
        assert ca_ski in aki, name


def test_rerun_keeps_the_ca_and_existing_leaves(pki: Path) -> None:
    before = digests(pki)
    (pki / "client_1.pem").unlink()

    stdout = gen(pki)

    after = digests(pki)
    assert sorted(after) == sorted(before)
    for name in ["ca.key", "ca.crt", "server.pem", "client_0.pem"]:
        assert after[name] == before[name], name
        assert f"kept   {pki / name}" in stdout
    assert after["client_1.pem"] != before["client_1.pem"]
    assert f"wrote  {pki / 'client_1.pem'}" in stdout
    openssl("verify", "-CAfile", pki / "ca.crt", "-purpose", "sslclient", pki / "client_1.pem")


def test_add_client_signed_by_the_existing_ca(pki: Path) -> None:
    before = digests(pki)
    stdout = gen("--client", "alice", pki)

    alice = pki / "alice.pem"
    assert f"wrote  {alice}" in stdout
    after = digests(pki)
    assert after.pop("alice.pem")
    assert after == before
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600
    assert subject(alice) == "subject=CN=alice"
    assert "TLS Web Client Authentication" in ext(alice, "extendedKeyUsage")
    out = openssl("verify", "-CAfile", pki / "ca.crt", "-purpose", "sslclient", alice)
    assert out.strip() == f"{alice}: OK"

    # Asking again keeps the existing certificate.
    first = alice.read_bytes()
    assert f"kept   {alice}" in gen("--client", "alice", pki)
    assert alice.read_bytes() == first


def test_add_client_needs_an_existing_ca(tmp_path: Path) -> None:
    proc = run_gen("--client", "alice", tmp_path)
    assert proc.returncode != 0
    assert "no CA" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "-x", "a/b", "a b", "CN=x", "", "server", "ca"])
def test_add_client_rejects_unsafe_names(pki: Path, name: str) -> None:
    before = digests(pki)
    proc = run_gen("--client", name, pki)
    assert proc.returncode != 0
    assert "client NAME" in proc.stderr
    assert digests(pki) == before
    assert not (pki.parent / "evil.pem").exists()


def test_lone_ca_key_is_never_replaced(tmp_path: Path) -> None:
    # Without its certificate the key is useless, but it may be the only copy of a CA in use.
    key = tmp_path / "ca.key"
    key.write_text("precious\n")
    proc = run_gen(tmp_path)
    assert proc.returncode != 0
    assert "only one of" in proc.stderr
    assert key.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ca.key"]


def test_leaf_from_another_ca_is_reported_not_kept_silently(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    gen(first)
    gen(second)
    shutil.copy(first / "server.pem", second / "server.pem")
    proc = run_gen(second)
    assert proc.returncode != 0
    assert "server.pem exists but does not verify" in proc.stderr


def test_default_outdir_is_the_script_folder(tmp_path: Path) -> None:
    script_dir = tmp_path / "repo" / "ca"
    script_dir.mkdir(parents=True)
    shutil.copy(GEN_SH, script_dir / "gen.sh")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert SH is not None
    proc = subprocess.run(
        [SH, "../repo/ca/gen.sh"],  # a relative path from an unrelated cwd
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in script_dir.iterdir()) == sorted([*STANDARD, "gen.sh"])
    assert list(elsewhere.iterdir()) == []


def test_missing_openssl_is_a_clear_error(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    proc = run_gen(tmp_path / "out", env={"PATH": str(empty_bin)})
    assert proc.returncode != 0
    assert "'openssl' command was not found" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_temporary_files_are_removed(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out"
    gen(out, env={**os.environ, "TMPDIR": str(scratch)})
    gen("--client", "alice", out, env={**os.environ, "TMPDIR": str(scratch)})
    assert list(scratch.iterdir()) == []
    # Neither CSRs and configs nor the staging copies used for no-clobber publishing remain.
    assert sorted(p.name for p in out.iterdir()) == sorted([*STANDARD, "alice.pem"])


def _handshake(server: ssl.SSLObject, client: ssl.SSLObject, bios: list[ssl.MemoryBIO]) -> None:
    """Drive both ends of an in-memory TLS handshake to completion."""
    s_in, s_out, c_in, c_out = bios
    client_done = server_done = False
    # A TLS 1.3 handshake needs two round trips; the bound only guards against a livelock.
    for _ in range(10):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if client_done and server_done:
            return
    raise AssertionError("the in-memory handshake did not finish")


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1", "::1"])
def test_jobd_tls_accepts_the_generated_files(pki: Path, server_hostname: str) -> None:
    # Each .pem holds certificate and key, so no separate key path is passed.
    server_ctx = tls.server_context(pki / "ca.crt", pki / "server.pem")
    client_ctx = tls.client_context(pki / "ca.crt", pki / "client_0.pem")
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname=server_hostname)

    _handshake(server, client, bios)

    for end in (server, client):
        tls.check_negotiated(end)
    assert tls.common_name(server.getpeercert()) == "client_0"


def test_revoke_writes_a_crl_of_every_revoked_certificate(tmp_path: Path) -> None:
    gen(tmp_path)
    serial = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "client_1.pem"), "-noout", "-serial"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().split("=")[1]  # fmt: skip
    gen("--revoke", "client_1", tmp_path)
    gen("--revoke", "client_1", tmp_path)  # again: kept, CRL refreshed
    crl = subprocess.run(
        ["openssl", "crl", "-in", str(tmp_path / "ca.crl"), "-noout", "-text"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert crl.count("Serial Number:") == 1 and serial in crl
    verify = subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", str(tmp_path / "ca.crt"),
         "-CRLfile", str(tmp_path / "ca.crl"), str(tmp_path / "client_1.pem")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode != 0 and "revoked" in (verify.stdout + verify.stderr)
    missing = run_gen("--revoke", "nobody", tmp_path)
    assert missing.returncode != 0 and "no certificate" in missing.stderr
