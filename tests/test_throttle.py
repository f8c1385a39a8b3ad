"""gateway/state/throttle.py on a real loop: at once, then at most once per interval, and
never a poke lost."""

from __future__ import annotations

import asyncio

import pytest

from gateway.state.throttle import Throttle
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(10)


async def test_the_first_poke_calls_at_once_and_pokes_within_the_interval_make_one_more_call(
        ) -> None:
    loop = asyncio.get_running_loop()
    calls: list[float] = []
    t = Throttle(0.2, lambda: calls.append(loop.time()))
    t.poke()
    assert len(calls) == 1  # leading edge: no wait
    for _ in range(50):
        t.poke()
    assert len(calls) == 1
    await wait_until(lambda: len(calls) == 2, 5, what="the trailing call")
    assert calls[1] - calls[0] >= 0.2 - 1e-3
    t.poke()  # within the interval after the trailing call: waits for it again
    assert len(calls) == 2
    await wait_until(lambda: len(calls) == 3, 5, what="the next trailing call")
    assert calls[2] - calls[1] >= 0.2 - 1e-3


async def test_a_cancelled_throttle_makes_no_trailing_call() -> None:
    calls: list[int] = []
    t = Throttle(0.05, lambda: calls.append(1))
    t.poke()
    t.poke()
    t.cancel()
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, done.set)
    await done.wait()
    assert calls == [1]


async def test_a_poke_after_cancel_calls_nothing() -> None:
    """Sync.stop cancels the throttle first, then waits for its side tasks, flushes the
    snapshot and leaves the store, while the subscription still delivers pushes: a large
    one then poked the throttle again, which called at once (or armed a new timer) and
    started a re-read of a store being closed; its command connection reconnects, and
    that connection and task outlived the stop. A cancelled throttle stays cancelled."""
    calls: list[int] = []
    t = Throttle(0.05, lambda: calls.append(1))
    t.poke()
    t.cancel()
    t.poke()  # within the interval: would arm a timer
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, done.set)
    await done.wait()
    t.poke()  # past it: would call at once
    assert calls == [1]
