"""admin/coalesce.py: a render measured long because the process was paused in it (SIGSTOP,
a VM's stolen time, a swap storm) must not hold every later /metrics scrape for four times
that pause (found by review of impworker's render share: a render that took 30 s of wall
time made the next scrape wait 120 s, past any Prometheus scrape_timeout: the target read
as down, `up == 0` alerts, while the gateway was fine). The wait after a render is bounded
(MAX_WAIT). On the real asyncio loop; the render is a plain function, as api.py's is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

import pytest

from gateway.admin.coalesce import MAX_WAIT, Coalesced

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
