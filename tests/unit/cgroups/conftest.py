"""Fixtures of the real-backend tests: a test parent group, the backend (every group under
it killed and removed on the way out, then the parent), the test's child processes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from rootcgroups import FAIL_AFTER, backend_or_skip, leftover_dirs, skip_unless_has

from jobd.cgroups import CgroupBackend


@pytest.fixture
def parent_name() -> str:
    return f"jobd-test-{secrets.token_hex(4)}"


@pytest.fixture(params=["detected", "v2-on-unified"])
def real_backend(request: pytest.FixtureRequest, parent_name: str) -> CgroupBackend:
    # Skipping from a sync fixture keeps the reason; an async one loses it.
    backend = backend_or_skip(parent_name, request.param)
    try:
        skip_unless_has(backend, request)
    except pytest.skip.Exception:
        backend.remove_parent()
        raise
    return backend


@pytest.fixture
async def backend(real_backend: CgroupBackend, parent_name: str) -> AsyncIterator[CgroupBackend]:
    """The real backend; on the way out every group under the test parent is killed,
    waited for and removed, then the parent itself."""
    backend = real_backend
    try:
        yield backend
    finally:
        try:
            for group in backend.leftovers():
                group.kill()
                with trio.fail_after(FAIL_AFTER):
                    await group.wait_empty()
                group.remove()
        finally:
            backend.remove_parent()
    assert leftover_dirs(parent_name) == []


@pytest.fixture
async def children() -> AsyncIterator[list[trio.Process]]:
    """Direct children of the test, killed and reaped whatever happens."""
    procs: list[trio.Process] = []
    try:
        yield procs
    finally:
        with trio.fail_after(FAIL_AFTER):
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()


