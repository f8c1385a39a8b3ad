"""An instance that proved it runs without a drill's restore is not let off by going quiet
during its catch-up time (control/drillbehind.py).

Since the catch-up rule, an instance that answers "behind" is asked again a poll later and
named only if it is still behind then. But the asks of an address ended at the first batch
nobody answered ("every instance there left"), with nothing said of the instances that had
proved they were behind: one whose admin listener stalled (a loaded host, 3 s without an
answer) or whose address stopped answering the drill (a flapping admin network) while its
data plane served on, enforcing the drill's kill, was taken for gone and the drill passed;
and so was every other worker of its group still waiting for its own second ask. Before the
catch-up rule both were named at once. Real HTTP listeners on loopback answer as the
instances, with real proofs.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession, web

from gateway.control import drillasks
from gateway.control.drillasks import Budget
from gateway.control.drillbehind import behind
from gateway.control.drillload import AdminClient
from gateway.domain.readyzproof import drill_keys, proof
from tests.test_drill_unproven import _listener, _operator

pytestmark = pytest.mark.timeout(30)

SECRET = b"s" * 32
DRILL, GEN = "d-7", 9


def _proved(request: web.Request, name: str, gen: int) -> web.Response:
    doc: dict[str, object] = {"instance": name, "generation": gen, "ready": True}
    if "nonce" in request.query:
        doc["proof"] = proof("k1", SECRET, request.query["drill"], name, gen,
                             request.query["nonce"])
    return web.json_response(doc)


async def test_a_worker_group_that_goes_quiet_after_proving_it_is_behind_is_named(
        backends) -> None:
    """Two workers at one address both prove "behind"; then the address stops answering
    (here: 503 with no JSON, as a proxy in front of a stalled listener). Both are named."""
    asks = [0]

    async def group(request: web.Request) -> web.Response:
        asks[0] += 1
        if asks[0] <= 2:  # (the first batch: one answer of each worker)
            return _proved(request, "w1" if asks[0] == 1 else "w2", GEN - 1)
        if asks[0] <= 8:  # (the rest of that batch: the same worker again)
            return _proved(request, "w1", GEN - 1)
        return web.Response(status=503, text="upstream stalled")

    admin = await _listener(backends, group)
    keys = drill_keys({"k1": SECRET}, DRILL)
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        found = await behind(api, ["w1", "w2"], {"w1": admin, "w2": admin}, GEN, DRILL,
                             keys, catch_up=0.3)
    assert asks[0] > 8, asks  # (asked again after the catch-up time)
    assert found.late == ["w1", "w2"], found
    assert found.unverified == [] and found.unasked == [], found


async def test_one_instance_that_proved_it_is_behind_then_times_out_is_named(
        backends, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drillasks, "ASK_TIMEOUT", 0.5)  # (3 s: shortened to keep this short)
    asks = [0]

    async def stalls(request: web.Request) -> web.Response:
        asks[0] += 1
        if asks[0] == 1:
            return _proved(request, "b", GEN - 1)
        await asyncio.sleep(2)  # (longer than the drill waits for an answer)
        return _proved(request, "b", GEN - 1)

    answered = [0]

    async def caught_up(request: web.Request) -> web.Response:  # (slow, then applied it)
        answered[0] += 1
        return _proved(request, "c", GEN - 1 if answered[0] == 1 else GEN)

    slow, fine = await _listener(backends, stalls), await _listener(backends, caught_up)
    keys = drill_keys({"k1": SECRET}, DRILL)
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        found = await behind(api, ["b", "c"], {"b": slow, "c": fine}, GEN, DRILL, keys,
                             catch_up=0.2)
    assert asks[0] == 2 and answered[0] == 2, (asks, answered)
    assert found.late == ["b"], found  # (c caught up within its poll: not named)
    assert any("b: answered so, then not heard again" in line for line in found.lines(GEN))
    assert found.unasked == [] and found.unverified_applied == [], found


async def test_one_proved_behind_when_the_drills_asks_run_out_is_named_not_unasked(
        backends) -> None:
    """The drill's time for asking ends while `b`, proved behind, waits for its second ask:
    it was reported `unasked` ("not asked whether they applied the restore"), though it was
    asked and said it had not. It is named behind; a never-asked address stays unasked."""
    async def proves(request: web.Request) -> web.Response:
        return _proved(request, "b", GEN - 1)

    b = await _listener(backends, proves)
    keys = drill_keys({"k1": SECRET}, DRILL)
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        found = await behind(api, ["b"], {"b": b}, GEN, DRILL, keys, catch_up=1.0,
                             budget=Budget(seconds=0.4))
        spent = await behind(api, ["b", "c"], {"b": b, "c": b + "/c"}, GEN, DRILL, keys,
                             catch_up=1.0, budget=Budget(total=1))
    assert found.late == ["b"] and found.unasked == [], found
    assert any("RESTORE NOT APPLIED by b" in line for line in found.lines(GEN)), found
    # (one ask in all: b's first; its second and c's never made)
    assert spent.late == ["b"] and [u["instances"] for u in spent.unasked] == [["c"]], spent
