"""gateway/tasks.py: stopping background tasks: cancelled and awaited; one that had died
of an error is logged, and the others are still stopped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.tasks import cancel


async def test_running_tasks_are_cancelled_and_awaited() -> None:
    forever = asyncio.Event()
    a = asyncio.create_task(forever.wait(), name="a")
    b = asyncio.create_task(forever.wait(), name="b")
    await asyncio.sleep(0)
    await cancel(a, None, [b])
    assert a.cancelled() and b.cancelled()


async def test_a_task_that_died_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug in the loop")

    dead = asyncio.create_task(broken(), name="analysis")
    alive = asyncio.create_task(asyncio.Event().wait(), name="sweep")
    await asyncio.sleep(0)
    assert dead.done()
    with caplog.at_level(logging.ERROR, logger="killgate"):
        await cancel(dead, alive)  # does not raise
    assert alive.cancelled()
    failed = [r for r in caplog.records if r.getMessage() == "task_failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert "a bug in the loop" in repr(failed[0].__dict__)


async def test_nothing_to_stop() -> None:
    await cancel(None)
    await cancel([])
