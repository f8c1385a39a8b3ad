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


async def test_an_instance_polling_less_often_than_the_opener_is_given_its_own_poll(
        backends) -> None:
    """The allowance was the opener's poll interval (its /v1/config) for every instance: one
    whose config polls less often (a config rolled out to some instances only) was named
    before its own poll had come. Its /readyz says its poll interval (`state.
    poll_interval_ms`); the difference is added, bounded (CATCH_UP_MAX): a claim past any
    config's is ignored."""
    started = time.monotonic()

    def answer(request: web.Request, poll_ms: float, until: float) -> web.Response:
        gen = GEN if time.monotonic() - started >= until else GEN - 1
        return web.json_response({"instance": request.match_info["who"], "generation": gen,
                                  "ready": True, "state": {"poll_interval_ms": poll_ms}})

    async def slow(request: web.Request) -> web.Response:
        return answer(request, 1000, 0.8)

    async def liar(request: web.Request) -> web.Response:
        return answer(request, 1e12, 60)

    app = web.Application()
    app.router.add_get("/slow/{who}/readyz", slow)
    app.router.add_get("/liar/{who}/readyz", liar)
    base = f"http://127.0.0.1:{await backends(app)}"
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        started = time.monotonic()
        found = await behind(api, ["s", "l"], {"s": f"{base}/slow/s", "l": f"{base}/liar/l"},
                             GEN, catch_up=0.3, poll=0.05)
    took = time.monotonic() - started
    # (s: 0.3 s + its poll's 0.95 s more; l: named after the 0.3 s alone)
    assert found.unproven == ["s"] and found.late == ["l"], found
    assert took < 3.0, took


async def test_workers_reconnecting_after_a_store_outage_do_not_spend_the_drills_asks(
        backends) -> None:
    """Each ask of an address a `serve --workers N` group shares reaches one worker (the
    kernel's hash): hearing again from each of N workers behind costs about N·H(N) asks (54
    for 16), every round. Seven hosts of 16 workers each, all reconnecting after a store
    outage, spent the drill's 1024 asks and were named RESTORE NOT APPLIED: asked again at
    half their catch-up time and at its end, and each round split by when each had first
    answered (a round for the few due, the others' answers dropped, about 16 asks each).
    A group's workers are now asked again together, once the last one's catch-up time has
    passed: one round of N·H(N) asks."""
    import random

    catch_up = catch_up_for(0.05)
    caught_up = catch_up * 0.9
    hosts, workers = 7, 16

    def app_of(host: int) -> web.Application:
        pick = random.Random(host)  # (the kernel's hash, as a fixed sequence)

        async def ready(request: web.Request) -> web.Response:
            who = f"host{host}-100-abcdef-w{pick.randrange(workers)}"
            gen = GEN if time.monotonic() - started >= caught_up else GEN - 1
            return web.json_response({"instance": who, "generation": gen, "ready": True})

        app = web.Application()
        app.router.add_get("/readyz", ready)
        return app

    admin_of, data_of = {}, {}
    for h in range(hosts):
        admin = f"http://127.0.0.1:{await backends(app_of(h))}"
        for w in range(workers):
            admin_of[f"host{h}-100-abcdef-w{w}"] = admin
            data_of[f"host{h}-100-abcdef-w{w}"] = f"http://host{h}:8080"
    started = time.monotonic()
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        started = time.monotonic()
        found = await behind(api, sorted(admin_of), admin_of, GEN, catch_up=catch_up,
                             data_of=data_of, poll=0.05)
    assert found.late == [] and found.unasked == [], (found.asks, found.late[:3],
                                                      found.unasked[:1])
    assert len(found.unproven) == hosts * workers and found.asks <= MAX_TOTAL, found.asks
