"""What a drill's questions after its restore may cost in all (control/drillasks.py).

Each admin address the store lists was asked at most 1024 times, 8 at once, for 10 s; but
every address at once and without a total: whoever writes the heartbeats (any number of
made-up instances in a fleet without a state signing key; replayed ones with it) made the
drill open hundreds of connections at a time and ask thousands of times. Now a drill asks
MAX_TOTAL times in all, ALL_AT_ONCE at a time; what it could not ask is named (address,
instances, why) and the drill does not pass. A real gateway on a real redis whose
heartbeat set holds 40 instances at 10 addresses, written with the store's own client;
the addresses served by a real HTTP listener on loopback that counts what it is asked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillasks import ALL_AT_ONCE, ALL_FOR, MAX_TOTAL, Budget
from gateway.control.drillbehind import behind
from gateway.control.drillfleet import published
from gateway.control.drillload import AdminClient
from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, running_gateway, write_config
from tests.drillrig import routes
from tests.staterig import store_on
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(30)

ADDRESSES, EACH = 10, 4  # (asks_for(4) = 49 asks an address: 490 in all)
TOTAL, AT_ONCE = 256, 8


def test_a_drills_asks_are_bounded_in_all() -> None:
    assert MAX_TOTAL == 1024 and ALL_AT_ONCE == 32 and ALL_FOR == 30.0


async def test_a_store_listing_many_addresses_cannot_make_a_drill_ask_without_end(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    served, at_once, most = [0], [0], [0]

    async def someone_else(request: web.Request) -> web.Response:
        served[0] += 1  # (answers, but never as the instance asked for: asked again)
        at_once[0] += 1
        most[0] = max(most[0], at_once[0])
        try:
            await asyncio.sleep(0.005)  # (a moment's work: the asks in flight overlap)
            return web.json_response({"instance": "nobody", "generation": 0})
        finally:
            at_once[0] -= 1

    app = web.Application()
    for i in range(ADDRESSES):
        app.router.add_get(f"/a{i}/readyz", someone_else)
    port = await backends(app)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2),
                       state=_state(redis_server, tmp_path, instance_lease="20s"))
    async with running_gateway(cfg, "inst-a") as g:
        store = store_on(redis_server, "revops")
        await store.open()
        try:
            for i in range(ADDRESSES):
                for j in range(EACH):
                    await store.heartbeat(f"listed-{i}-{j}", 0, "sha256:x", {
                        "admin": f"http://127.0.0.1:{port}/a{i}",
                        "data": f"http://127.0.0.1:{port}/d{i}"})
        finally:
            await store.close()
        api = AdminClient(session, g.admin, admin_token("killgate:read"))
        instances = (await api.call("GET", "/v1/status"))["instances"]
        assert len(instances) == ADDRESSES * EACH + 1, sorted(instances)[:5]
        gen = instances["inst-a"]["generation"] + 1  # (the restore's: nobody runs it yet)
        listed = sorted(n for n in instances if n != "inst-a")
        # (the drill's own budget, MAX_TOTAL asks, ALL_AT_ONCE in flight, scaled down to
        # keep this test short: each ask is a connection of its own)
        found = await behind(api, listed, published(instances), gen,
                             budget=Budget(TOTAL, AT_ONCE))
    assert served[0] <= TOTAL and found.asks == served[0] == TOTAL, (served, found.asks)
    assert most[0] <= AT_ONCE, most  # (in flight in all, not 8 per address)
    assert found.late == [] and found.unasked, found
    left = [n for u in found.unasked for n in u["instances"]]
    assert set(left) <= set(listed) and len(left) == len(set(left)), left
    for u in found.unasked:
        assert set(u) == {"admin", "instances", "why"}, u
        assert u["admin"].startswith(f"http://127.0.0.1:{port}/a"), u
        assert "asks in all were spent" in u["why"], u
    assert found.check()["unasked"] == found.unasked
    assert any("not asked whether they applied the restore" in p for p in found.problems())


async def test_forged_heartbeats_never_reach_a_drills_asks(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """Whoever writes the store without the state key cannot spend a drill's asks (and so
    fail every drill with `unasked`): heartbeats signed with another key are refused where
    the drill reads the fleet, so they are neither started with nor asked."""
    asked = [0]

    async def count(request: web.Request) -> web.Response:
        asked[0] += 1
        return web.json_response({"instance": "nobody", "generation": 0})

    app = web.Application()
    app.router.add_get("/readyz", count)
    port = await backends(app)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2),
                       state=_state(redis_server, tmp_path, instance_lease="20s"))
    async with running_gateway(cfg, "inst-a") as g:
        forger = store_on(redis_server, "revops", current=Key.of(b"not-the-state-key-" * 3))
        await forger.open()
        try:
            for i in range(200):
                await forger.heartbeat(f"forged-{i}", 0, "sha256:x", {
                    "admin": f"http://127.0.0.1:{port}", "data": f"http://127.0.0.1:{port}"})
        finally:
            await forger.close()
        api = AdminClient(session, g.admin, admin_token("killgate:read"))
        instances = (await api.call("GET", "/v1/status"))["instances"]
        found = await behind(api, sorted(instances), published(instances),
                             instances["inst-a"]["generation"] + 1)
    assert sorted(instances) == ["inst-a"], sorted(instances)[:5]
    assert asked[0] == 0 and found.unasked == [], (asked, found)
