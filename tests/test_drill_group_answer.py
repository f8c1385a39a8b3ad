"""A `serve --workers N` group is asked once after a drill's restore, not N·H(N) times.

The N workers of a group share one admin address (the kernel hands each connection to one
of them); the drill asked it until each had answered as itself: about N·H(N) asks, 1024
(the drill's asks in all, drillasks.MAX_TOTAL) for a group of 90, whose workers were then
left `unasked` and the drill failed. Scaling the budget with the instances listed would let
whoever writes heartbeats to the store make a drill ask without bound. Now the worker an ask
reaches tells of its siblings too (`group` in its /readyz answer, read from the group's run
directory: gateway/workerstates.py), each entry proved with the drill's key for the ask's
nonce, so one ask tells of the group; the budget is unchanged. Real `killgate serve
--workers` processes on a real redis-server; a drill budget scaled down in proportion (the
group here has 6 workers, 2 asks: impossible to hear 6 workers as themselves in 2 asks).
The attacker's side: a process at a listed address that answers for made-up workers with
proofs it cannot make spends no more than the budget, and none of them is taken as heard.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillasks import Budget
from gateway.control.drillbehind import behind
from gateway.control.drillfleet import published
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.readyzproof import MAX_VOUCHED, drill_keys
from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    admin_token,
    free_port,
    wait_until,
    write_config,
)
from tests.drillrig import routes
from tests.test_drill_unproven import _operator
from tests.test_revops_fleet import _state
from tests.test_workers import _children

pytestmark = pytest.mark.timeout(90)  # (6 workers start in 20 s on a loaded 2-core host)

WORKERS = 6
DRILL = "d-group-answer-1"


def _keys() -> dict[str, str]:
    key = Key.of(STATE_KEY.encode())
    return drill_keys({key.kid: key.secret}, DRILL)


async def test_one_ask_tells_of_a_whole_group(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    g = gateway_procs(write_config(tmp_path, routes(p1, p2),
                                   state=_state(redis_server, tmp_path, instance_lease="20s"),
                                   listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"), workers=WORKERS)
    await asyncio.to_thread(g.wait_ready)
    read = AdminClient(session, g.admin, admin_token("killgate:read"))
    found: dict = {}

    async def all_workers() -> bool:  # (each with its admin address, at one generation)
        found.clear()
        found.update((await read.call("GET", "/v1/status")).get("instances") or {})
        return len(found) == WORKERS and all(i.get("admin") for i in found.values()) \
            and len({i.get("generation") for i in found.values()}) == 1

    await wait_until(all_workers, 30, 0.1, f"the group's {WORKERS} workers in the fleet")
    names, admin_of = sorted(found), published(found)
    assert len(set(admin_of.values())) == 1, admin_of  # (one address, shared)
    gen = found[names[0]]["generation"]
    # (the fleet's status shows no instance: each is asked, as after a store outage)
    api = AdminClient(session, await _operator(backends), "t")
    ok = await behind(api, names, admin_of, gen, DRILL, _keys(), budget=Budget(2))
    assert ok.unasked == [] and ok.late == [] and ok.unverified_applied == [], ok
    assert sorted(ok.applied) == names and ok.asks <= 2, (ok.asks, ok.applied)
    # a restore none of them runs yet: each proved behind (named: catch-up 0), in one ask
    late = await behind(api, names, admin_of, gen + 1, DRILL, _keys(), budget=Budget(2))
    assert late.late == names and late.unverified == [] and late.unasked == [], late
    assert late.asks <= 2, late.asks


async def test_answers_for_made_up_workers_spend_no_more_than_the_budget(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """Heartbeats for 300 workers of one 'group' at an address the forger's process
    answers (written with the state key, as replayed ones would be), each answer listing
    all 300 with proofs it cannot make: the drill asks its budget and no more, checks at
    most MAX_VOUCHED entries an answer, and takes none for heard (each is `unasked`)."""
    from tests.conftest import running_gateway
    from tests.staterig import store_on

    many, total = 300, 16
    asked = [0]
    fake = [f"forger-100-abcdef-w{i}" for i in range(many)]

    async def claim(request: web.Request) -> web.Response:
        asked[0] += 1
        bogus = {"kid": next(iter(_keys())), "mac": "0" * 64}
        return web.json_response({"instance": "nobody", "generation": 0, "group": [
            {"instance": n, "generation": 99, "proof": bogus} for n in fake * 2]})

    app = web.Application()
    app.router.add_get("/readyz", claim)
    port = await backends(app)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2),
                       state=_state(redis_server, tmp_path, instance_lease="20s"))
    async with running_gateway(cfg, "inst-a") as g:
        store = store_on(redis_server, "revops")
        await store.open()
        try:
            for n in fake:
                await store.heartbeat(n, 0, "sha256:x", {
                    "admin": f"http://127.0.0.1:{port}", "data": "http://forger:8080"})
        finally:
            await store.close()
        api = AdminClient(session, g.admin, admin_token("killgate:read"))
        instances = (await api.call("GET", "/v1/status"))["instances"]
        gen = instances["inst-a"]["generation"] + 1
        listed = sorted(n for n in instances if n != "inst-a")
        assert listed == sorted(fake), listed[:3]
        found = await behind(api, listed, published(instances), gen, DRILL, _keys(),
                             budget=Budget(total, 8))
    assert asked[0] == found.asks == total, (asked, found.asks)
    assert not found.applied and found.late == [] and found.unverified_applied == [], found
    assert sorted(n for u in found.unasked for n in u["instances"]) == sorted(fake)
    assert many * 2 > MAX_VOUCHED  # (each answer listed more than the drill checks)


async def test_a_worker_replaced_in_its_slot_is_told_of_as_gone(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    """A worker killed (SIGKILL) and replaced by its supervisor: the drill started with its
    name, which no process answers as any more. Asked for until it answered as itself,
    it spent up to 1024 asks (asks_for) and was left `unasked` when the budget ran out.
    Its replacement names it gone (the slot's file), proved: left at once."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    g = gateway_procs(write_config(tmp_path, routes(p1, p2),
                                   state=_state(redis_server, tmp_path, instance_lease="20s"),
                                   listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"), workers=3)
    await asyncio.to_thread(g.wait_ready)
    read = AdminClient(session, g.admin, admin_token("killgate:read"))

    async def instances() -> dict:
        try:
            return dict((await read.call("GET", "/v1/status")).get("instances") or {})
        except DrillApiError:  # (a kept connection to the worker SIGKILLed below: reset)
            return {}

    async def three() -> dict | None:
        found = await instances()
        ok = len(found) == 3 and all(i.get("admin") for i in found.values()) \
            and len({i.get("generation") for i in found.values()}) == 1
        return found if ok else None

    before = await wait_until(three, 30, 0.1, "the group's 3 workers in the fleet")
    victim = _children(g.proc.pid)[0]
    gone = next(n for n in before if f"-{victim}-" in n)
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:  # (its replacement heartbeats, at the same generation)
        now = await instances()
        new = [n for n in now if n not in before and now[n].get("admin")]
        return bool(new) and now[new[0]].get("generation") == before[gone]["generation"]

    await wait_until(replaced, 30, 0.1, "the killed worker's replacement in the fleet")
    api = AdminClient(session, await _operator(backends), "t")
    found = await behind(api, sorted(before), published(before), before[gone]["generation"],
                         DRILL, _keys(), budget=Budget(2))
    assert found.unasked == [] and found.late == [] and found.unverified_applied == [], found
    assert sorted(found.applied) == sorted(n for n in before if n != gone), found.applied
    assert found.asks <= 2, found.asks
