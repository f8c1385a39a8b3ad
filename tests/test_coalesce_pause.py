"""admin/coalesce.py: a render measured long because the process was paused in it (SIGSTOP,
a VM's stolen time, a swap storm) must not hold every later /metrics scrape for four times
that pause (found by review of impworker's render share: a render that took 30 s of wall
time made the next scrape wait 120 s, past any Prometheus scrape_timeout: the target read
as down, `up == 0` alerts, while the gateway was fine). The wait after a render is bounded
(MAX_WAIT). On the real asyncio loop; the render is a plain function, as api.py's is."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Hashable

import pytest

from gateway.admin.coalesce import MAX_WAIT, Coalesced, Steps

pytestmark = pytest.mark.timeout(10)


async def test_a_paused_render_does_not_hold_the_next_scrape_for_long() -> None:
    calls: list[float] = []

    def render(key: Hashable) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.1)  # (the process stopped in the render: wall time, not work)
        return f"page {len(calls)}"

    # share 0.001: the 0.1 s render would hold the next one ~100 s without the bound
    # (the same arithmetic as a 25 s pause at the default share of 0.2)
    c: Coalesced[str] = Coalesced(render, share=0.001)
    assert await c.get("text") == "page 1"
    t0 = time.monotonic()
    page = await asyncio.wait_for(c.get("text"), MAX_WAIT + 2.0)
    assert page == "page 2"
    assert time.monotonic() - t0 <= MAX_WAIT + 0.5


async def test_a_flood_still_waits_its_share_after_a_quick_render() -> None:
    n = 0

    def render(key: Hashable) -> int:
        nonlocal n
        n += 1
        time.sleep(0.02)
        return n

    c: Coalesced[int] = Coalesced(render, share=0.2)
    assert await c.get("k") == 1
    t0 = time.monotonic()
    assert await c.get("k") == 2
    waited = time.monotonic() - t0
    assert 0.05 <= waited <= MAX_WAIT  # (~0.08 s: 4 x the render, as before)


async def test_a_sliced_render_gives_the_loop_back_between_its_steps() -> None:
    """A render that is a generator (the /metrics page: taken in one step, written in
    slices) runs a step per turn of the loop: callbacks ready meanwhile run between its
    steps; its share is the steps' own time, not the wall time they were spread over."""
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    # (the loop's CPU time, not the wall clock: on a loaded machine the process is
    # descheduled between any two instructions (wall gaps of 41-496 ms, 10 runs in 30 at
    # load 10), and a gap in wall time measured the machine, not what the loop ran in one go)
    def tick() -> None:  # (the data plane: ready again at every turn)
        ticks.append(time.thread_time())
        if not done:
            loop.call_soon(tick)

    def render(key: Hashable) -> Steps[str]:
        for _ in range(10):
            t0 = time.thread_time()
            while time.thread_time() - t0 < 0.005:  # 5 ms of work per step
                pass
            yield
        return "page"

    done = False
    c: Coalesced[str] = Coalesced(render, share=0.5)
    loop.call_soon(tick)
    t0 = time.thread_time()
    page = await c.get("k")
    done = True
    assert page == "page"
    gaps = [b - a for a, b in itertools.pairwise(ticks) if a >= t0]
    assert len(gaps) >= 10 and max(gaps) < 0.04, max(gaps)  # (one render: 50 ms in one go)
    # the next render waits its share after the steps' ~50 ms (at 0.5: ~50 ms more)
    t1 = time.perf_counter()
    assert await c.get("k") == "page"
    assert 0.04 <= time.perf_counter() - t1 - 0.05 <= MAX_WAIT
