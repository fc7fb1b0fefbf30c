"""The loop the API runs on: one connection's asyncio callback that fails ends nothing else."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from jobd.api import serving


async def test_an_error_in_an_asyncio_callback_is_logged_and_the_daemon_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:  # as asyncio's transport once did, for a client that had gone
        raise AttributeError("'NoneType' object has no attribute 'connection_lost'")

    ran = trio.Event()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async with serving.asyncio_loop() as loop:
            loop.call_soon(broken)
            loop.call_soon(ran.set)  # after it, in order
            await ran.wait()
            await trio.testing.wait_all_tasks_blocked()  # trio-asyncio's re-raise, if any
    assert "no attribute 'connection_lost'" in caplog.text
