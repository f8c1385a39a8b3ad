"""What asking instances behind again costs the drill's asks in all (control/drillbehind.py,
drillasks.Budget).

An instance behind is asked again within its catch-up time (a poll, its reconnect after a
store outage, a margin: 3.05 s with a 50 ms poll) so that one catching up sooner is let off
sooner. Asked every quarter of it, each instance behind cost five asks where it had cost
two: after a store outage (`killgate drill restore` of a store-loss drill that died), a
fleet of 300 instances all waiting out their reconnect spent the drill's 1024 asks before
their catch-up time had passed, and those not asked again were named "RESTORE NOT APPLIED"
(asked, then not heard again). Asked at half of it and at its end, they cost three. Real
HTTP: one listener answers for each instance at an address of its own.
"""

from __future__ import annotations

import time

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillasks import MAX_TOTAL
from gateway.control.drillbehind import behind, catch_up_for
from gateway.control.drillload import AdminClient
from tests.test_drill_unproven import _operator

pytestmark = pytest.mark.timeout(60)

N, GEN = 300, 5


async def test_a_fleet_reconnecting_after_a_store_outage_does_not_spend_the_drills_asks(
        backends) -> None:
    started = time.monotonic()
    catch_up = catch_up_for(0.05)
    caught_up = catch_up * 0.9  # (within the time it is given)
    asked = [0]

    async def ready(request: web.Request) -> web.Response:
        asked[0] += 1
        gen = GEN if time.monotonic() - started >= caught_up else GEN - 1
        return web.json_response({"instance": request.match_info["who"], "generation": gen,
                                  "ready": True})

    app = web.Application()
    app.router.add_get("/{who}/readyz", ready)
    base = f"http://127.0.0.1:{await backends(app)}"
    names = [f"i{n}" for n in range(N)]
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        started = time.monotonic()
        found = await behind(api, names, {n: f"{base}/{n}" for n in names}, GEN,
                             catch_up=catch_up)
    assert found.late == [] and found.unasked == [], (found.late[:3], found.unasked[:1])
    assert sorted(found.unproven) == sorted(names), found.unproven[:3]
    assert asked[0] == found.asks <= MAX_TOTAL, (asked, found.asks)
