from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Certs, Daemon, make_certs
from jobd.cgroups import shim


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def daemon(certs: Certs, tmp_path: Path) -> Iterator[Daemon]:
    """A running jobd; the test fails if it does not shut down cleanly with exit code 0."""
    d = Daemon(certs, tmp_path / "state").start()
    try:
        yield d
    finally:
        code = d.stop()
    d.check_exit(code)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory any account may enter: pytest's own temporary directories are root's
    alone, so tests of what an unprivileged job can reach need one outside them."""
    path = Path(tempfile.mkdtemp(prefix="jobd-shared-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def compiled_shim() -> str:
    """The compiled cgroup shim's path; the test is skipped where it was not built."""
    binary = shim.compiled()
    if binary is None:
        pytest.skip("the compiled cgroup shim was not built here (see setup.py)")
    return binary


@pytest.fixture(params=["compiled", "sh"])
def each_shim(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each cgroup shim in turn: the compiled one (skipped where it was not built), then the
    /bin/sh one that stands in for it."""
    if request.param == "sh":
        monkeypatch.setattr(shim, "compiled", lambda: None)
    else:
        request.getfixturevalue("compiled_shim")
    return str(request.param)
