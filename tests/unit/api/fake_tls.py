"""A TLS session's SSLObject as the API reads it, counting how often its certificate is read."""

from __future__ import annotations

from typing import Any


class FakeSSL:
    def __init__(self, cn: str | None, version: str = "TLSv1.3", serial: int | None = None) -> None:
        self.cn = cn
        self.serial = serial
        self._version = version
        self.reads = 0

    def version(self) -> str:
        return self._version

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256)

    def getpeercert(self) -> dict[str, Any]:
        self.reads += 1
        cert: dict[str, Any] = {"subject": ((("commonName", self.cn),),)} if self.cn else {}
        if self.serial is not None:
            cert["serialNumber"] = f"{self.serial:X}"
        return cert
