"""Fixtures of the CLI tests against the fake server (fakeserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from fakeserver import FakeCerts, FakeJobService, serve

from jobctl import cli


@pytest.fixture(scope="module")
def fake_certs(tmp_path_factory: pytest.TempPathFactory) -> FakeCerts:
    d = tmp_path_factory.mktemp("fake_certs")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(d / "ca.crt")
    other.cert_pem.write_to_path(d / "other_ca.crt")
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        d / "server.pem"
    )
    ca.issue_cert("alice", common_name="alice").private_key_and_cert_chain_pem.write_to_path(
        d / "client.pem"
    )
    other.issue_cert("eve", common_name="eve").private_key_and_cert_chain_pem.write_to_path(
        d / "other_client.pem"
    )
    return FakeCerts(
        d / "ca.crt", d / "server.pem", d / "client.pem", d / "other_ca.crt", d / "other_client.pem"
    )


@pytest.fixture
def service() -> FakeJobService:
    return FakeJobService()


@pytest.fixture
def jobctl(service: FakeJobService, fake_certs: FakeCerts) -> Iterator[Any]:
    """``jobctl(*argv)`` runs the CLI in-process against the fake server; returns the code."""
    with serve(service, fake_certs) as port:
        environ = {
            "JOBCTL_SERVER": f"127.0.0.1:{port}",
            "JOBCTL_CACERT": str(fake_certs.ca),
            "JOBCTL_CERT": str(fake_certs.client),
        }

        def run(*argv: str, extra: dict[str, str] | None = None) -> int:
            return cli._main(list(argv), environ={**environ, **(extra or {})})

        yield run


