"""The loop the API runs on: an asyncio callback that fails ends nothing else."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from jobd.api import serving
from jobd.model.units import parse_size


async def run_callbacks(*callbacks: object) -> None:
    ran = trio.Event()
    async with serving.asyncio_loop() as loop:
        for callback in callbacks:
            loop.call_soon(callback)  # type: ignore[arg-type]
        loop.call_soon(ran.set)  # after them, in order
        await ran.wait()
        await trio.testing.wait_all_tasks_blocked()  # trio-asyncio's re-raise, if any


async def test_asyncio_s_own_fault_is_one_line_and_the_daemon_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def lost_twice() -> None:  # as asyncio's socket transport does, for a client that has gone
        try:
            raise AttributeError("'NoneType' object has no attribute 'connection_lost'")
        finally:
            raise AttributeError("'NoneType' object has no attribute 'close'")

    with caplog.at_level(logging.WARNING):
        await run_callbacks(lost_twice)
    [record] = [r for r in caplog.records if "no attribute 'close'" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is None


async def test_a_fault_in_jobd_s_own_code_gets_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await run_callbacks(lambda: parse_size("lots"))  # raises inside jobd.model.units
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.exc_info is not None and "invalid size" in str(record.exc_info[1])
