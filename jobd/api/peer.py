"""Who is calling: what a connection's TLS says of its client, read once per connection and
handed to each of its calls' handlers through a context variable.

A TLS 1.3 connection's peer certificate and cipher cannot change after the handshake (jobd
asks for no post-handshake authentication), so ``jobd.api.connections`` reads them once, from
the transport's public ``get_extra_info("ssl_object")``, when the handshake is done, and sets
CALLER around the moment grpclib creates each call's task (which copies the context). Roles
and revocations are looked up on every call (``jobd.api.service.identity_of``): they change
on reload.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jobd.api.tls import TLSConfigError, check_negotiated, common_name
from jobd.policy.revocation import serial_of


@dataclass(frozen=True)
class PeerCertificate:
    name: str | None  # the client certificate's Common Name
    serial: int | None
    refused: str = ""  # why the session itself is refused, or ""

    @classmethod
    def of(cls, ssl_object: Any) -> PeerCertificate:
        """From a connection's SSLObject once its handshake is done (None: no TLS)."""
        if ssl_object is None:
            return cls(None, None, "no TLS session")
        try:
            check_negotiated(ssl_object)
        except TLSConfigError as exc:
            return cls(None, None, str(exc))
        cert = ssl_object.getpeercert()
        return cls(common_name(cert), serial_of(cert))


# The certificate of the connection a call came on; unset outside a call.
CALLER: ContextVar[PeerCertificate] = ContextVar("jobd_caller")
