"""Reading a CRL's revoked serial numbers (for connections opened before a revocation)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jobd.policy.revocation import revoked_serials, serial_of

GEN = Path(__file__).resolve().parents[3] / "ca" / "gen.sh"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def gen(*args: str) -> None:
    subprocess.run(["sh", str(GEN), *args], check=True, capture_output=True, timeout=60)


def serial(pem: Path) -> int:
    out = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-serial"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return int(out.strip().split("=")[1], 16)


def test_the_serials_a_crl_revokes(tmp_path: Path) -> None:
    gen(str(tmp_path))
    gen("--client", "client_2", str(tmp_path))
    gen("--revoke", "client_1", str(tmp_path))
    crl = tmp_path / "ca.crl"
    assert revoked_serials(crl) == {serial(tmp_path / "client_1.pem")}
    gen("--revoke", "client_2", str(tmp_path))
    both = {serial(tmp_path / "client_1.pem"), serial(tmp_path / "client_2.pem")}
    assert revoked_serials(crl) == both
    # DER as well as PEM; two PEM CRLs in one file.
    der = tmp_path / "ca.der"
    subprocess.run(["openssl", "crl", "-in", str(crl), "-outform", "DER", "-out", str(der)],
                   check=True)  # fmt: skip
    assert revoked_serials(der) == both
    twice = tmp_path / "twice.crl"
    twice.write_bytes(crl.read_bytes() * 2)
    assert revoked_serials(twice) == both


@pytest.mark.parametrize("data", [b"", b"\x30\x82\xff", b"not a crl at all", b"\x02\x01\x05"])
def test_what_is_not_a_crl_is_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.crl"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        revoked_serials(path)


def test_serial_of_a_peer_certificate() -> None:
    assert serial_of({"serialNumber": "90DE7E0D"}) == 0x90DE7E0D
    assert serial_of({}) is None and serial_of(None) is None
