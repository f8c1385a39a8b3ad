"""gateway/tasks.py: stopping background tasks: cancelled and awaited; one that had died
of an error is logged, and the others are still stopped. `unless_stopped`: a wait given
up at a stop (serving's start, a drill's first steps)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.tasks import cancel, unless_stopped


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


@pytest.mark.timeout(5)
async def test_unless_stopped_answers_the_result_its_error_or_none_at_a_stop() -> None:
    stop = asyncio.Event()

    async def answer() -> int:
        return 7

    async def broken() -> int:
        raise RuntimeError("refused")

    assert await unless_stopped(answer(), stop) == 7
    with pytest.raises(RuntimeError, match="refused"):
        await unless_stopped(broken(), stop)

    cleaned = asyncio.Event()

    async def slow() -> int:  # (a start waiting for Redis; its cleanup fails on the way out)
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()
            raise OSError("cleanup failed")  # (given up: dropped)

    waiting = asyncio.create_task(unless_stopped(slow(), stop))
    await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(waiting, 2) is None
    assert cleaned.is_set()  # (cancelled and awaited before the answer)


@pytest.mark.timeout(5)
async def test_unless_stopped_never_swallows_its_callers_cancel() -> None:
    waiting = asyncio.create_task(unless_stopped(asyncio.Event().wait(), asyncio.Event()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
