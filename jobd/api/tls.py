"""TLS contexts for jobd and jobctl: TLS 1.3 only, one cipher suite, mutual authentication.

Shared by the daemon and the client, so it imports nothing but the standard library.

Python 3.11's ``ssl`` cannot choose TLS 1.3 cipher suites (``set_ciphers`` covers TLS <= 1.2
only), so :func:`pin_tls13_suite` calls OpenSSL's ``SSL_CTX_set_ciphersuites`` on the context's
own ``SSL_CTX`` through the ``_ssl`` extension's library handle - the very OpenSSL this Python
uses, never one found by name - and then reads the result back through ``get_ciphers()``.
Anything unexpected raises :class:`TLSConfigError`: there is no silent fallback.
"""

from __future__ import annotations

import ctypes
import ssl
from pathlib import Path
from typing import Any

CIPHER_SUITE = "TLS_AES_256_GCM_SHA384"
ALPN = ["h2"]


class TLSConfigError(Exception):
    """The TLS configuration cannot be built as required (files, suite pinning)."""


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    # CPython's PySSLContext starts with PyObject_HEAD followed by `SSL_CTX *ctx`.
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        raise TLSConfigError("cannot locate the SSL_CTX of an ssl.SSLContext")
    return ptr


def _openssl() -> ctypes.CDLL:
    import _ssl  # the extension module; its handle resolves symbols of the libssl it links

    return ctypes.CDLL(_ssl.__file__)


def tls13_suites(ctx: ssl.SSLContext) -> list[str]:
    return [c["name"] for c in ctx.get_ciphers() if c.get("protocol") == "TLSv1.3"]


def pin_tls13_suite(ctx: ssl.SSLContext, suite: str = CIPHER_SUITE) -> None:
    """Restrict ``ctx`` to the single TLS 1.3 cipher suite ``suite``, or raise."""
    try:
        fn = _openssl().SSL_CTX_set_ciphersuites
    except (OSError, AttributeError) as exc:
        raise TLSConfigError(f"OpenSSL's SSL_CTX_set_ciphersuites is unavailable: {exc}") from exc
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    if fn(_ssl_ctx_pointer(ctx), suite.encode()) != 1:
        raise TLSConfigError(f"OpenSSL refused the TLS 1.3 cipher suite {suite}")
    got = tls13_suites(ctx)
    if got != [suite]:
        raise TLSConfigError(f"TLS 1.3 suites are {got} after pinning, expected only {suite}")


def _base_context(
    purpose: ssl.Purpose, cacert: Path, cert: Path, key: Path | None
) -> ssl.SSLContext:
    try:
        # With cafile= the default context trusts only our CA, never the system store.
        ctx = ssl.create_default_context(purpose, cafile=str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load CA certificate {cacert}: {_reason(exc)}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    pin_tls13_suite(ctx)
    try:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        what = f"{cert} / {key}" if key else str(cert)
        raise TLSConfigError(f"cannot load certificate and key {what}: {_reason(exc)}") from exc
    ctx.set_alpn_protocols(ALPN)
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def server_context(
    cacert: Path, cert: Path, key: Path | None = None, crl: Path | None = None
) -> ssl.SSLContext:
    """A server context that requires and verifies a client certificate from ``cacert``,
    refusing the ones ``crl`` revokes."""
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH, cacert, cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        load_crl(ctx, crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def load_crl(ctx: ssl.SSLContext, crl: Path) -> None:
    """Add ``crl`` to the context's store. Of several CRLs of one CA, OpenSSL uses the one with
    the latest lastUpdate (of equal ones, the first loaded): a replacement CRL must be newer
    to the second, which ``ca/gen.sh --revoke`` ensures."""
    try:
        ctx.load_verify_locations(cafile=str(crl))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load CRL {crl}: {_reason(exc)}") from exc


def client_context(cacert: Path, cert: Path, key: Path | None = None) -> ssl.SSLContext:
    """A client context that presents ``cert`` and checks the server against ``cacert``."""
    ctx = _base_context(ssl.Purpose.SERVER_AUTH, cacert, cert, key)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def check_negotiated(ssl_object: Any) -> None:
    """Second layer behind the pin: refuse a connection that negotiated anything else."""
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    if version != "TLSv1.3" or cipher is None or cipher[0] != CIPHER_SUITE:
        got = f"{version} {cipher[0] if cipher else None}"
        raise TLSConfigError(f"negotiated {got}, expected TLSv1.3 {CIPHER_SUITE}")


def common_name(cert: dict[str, Any] | None) -> str | None:
    """The subject Common Name of a certificate as returned by ``getpeercert()``."""
    if not cert:
        return None
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    # Two CNs make the identity ambiguous: treat the certificate as carrying none.
    return names[0] if len(names) == 1 else None
