"""Which certificates a CRL revokes, so that revocation reaches connections already open.

OpenSSL checks the CRL at each handshake; a connection opened before a revocation stays open.
So the daemon also reads the revoked serial numbers out of the CRL (at start and on SIGHUP),
refuses every call from a connection whose certificate is among them, and closes such
connections on reload. Python's ``ssl`` reads no CRL, so this walks its DER (RFC 5280,
``CertificateList``) far enough to list the ``userCertificate`` serials: a few lines, not a
library.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEQUENCE, INTEGER = 0x30, 0x02
_PEM = re.compile(rb"-----BEGIN X509 CRL-----(.*?)-----END X509 CRL-----", re.DOTALL)


def _items(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element in ``data[start:end]``."""
    pos = start
    while pos < end:
        if pos + 2 > end:
            raise ValueError("truncated DER")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 4 or pos + count > end:
                raise ValueError("bad DER length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > end:
            raise ValueError("truncated DER")
        yield tag, pos, pos + length
        pos += length


def _revoked_in(der: bytes) -> set[int]:
    (tag, start, end), *_ = _items(der, 0, len(der))  # CertificateList
    if tag != SEQUENCE:
        raise ValueError("not a CRL")
    (tag, start, end), *_ = _items(der, start, end)  # tbsCertList
    # version INTEGER (optional), signature SEQUENCE, issuer SEQUENCE, thisUpdate, nextUpdate
    # (optional), revokedCertificates SEQUENCE (optional), [0] extensions: the revoked list
    # is the third SEQUENCE, if there is one.
    sequences = [(s, e) for t, s, e in _items(der, start, end) if t == SEQUENCE]
    serials = set()
    if len(sequences) >= 3:
        start, end = sequences[2]
        for tag, entry_start, entry_end in _items(der, start, end):
            (serial_tag, s, e), *_ = _items(der, entry_start, entry_end)
            if tag == SEQUENCE and serial_tag == INTEGER:
                serials.add(int.from_bytes(der[s:e], "big", signed=True))
    return serials


def revoked_serials(crl: Path) -> frozenset[int]:
    """Every serial number the CRL file (PEM, one or more CRLs, or DER) revokes; ValueError
    if it cannot be read as one."""
    data = crl.read_bytes()
    blocks = [base64.b64decode(b"".join(m.split())) for m in _PEM.findall(data)] or [data]
    serials: set[int] = set()
    for der in blocks:
        serials |= _revoked_in(der)
    return frozenset(serials)


def serial_of(cert: dict[str, Any] | None) -> int | None:
    """The serial number of a certificate as ``getpeercert()`` returns it."""
    text = (cert or {}).get("serialNumber")
    return int(text, 16) if isinstance(text, str) else None
