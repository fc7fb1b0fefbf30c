from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Certs, Daemon, make_certs
from jobd.launch import binary


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
    alone, so tests of what an unprivileged job can reach need one outside them; and not in
    /tmp, which is private to every job with a mount namespace."""
    place = "/var/cache" if os.path.isdir("/var/cache") else None
    path = Path(tempfile.mkdtemp(prefix="jobd-shared-", dir=place))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def compiled_launcher() -> str:
    """The compiled launcher's path; the test is skipped where it was not built."""
    found = binary.compiled()
    if found is None:
        pytest.skip("the jobd launcher was not built here (see setup.py)")
    return found


@pytest.fixture(params=["compiled", "sh"])
def each_shim(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a job joins its cgroups in turn: the compiled launcher (skipped where it was
    not built), then the /bin/sh stand-in used where it was not."""
    if request.param == "sh":
        monkeypatch.setattr(binary, "compiled", lambda: None)
    else:
        request.getfixturevalue("compiled_launcher")
    return str(request.param)
