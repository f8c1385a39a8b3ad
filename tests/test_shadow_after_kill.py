"""Shadow copies after a kill that covers where they go: a route or global kill made
while the primary answered (the shadow version still eligible in the plan), and the noise
copy to the primary's own version killed meanwhile: no copy reaches what was killed (README,
the kill switch). From a second hostile review.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder
from tests.conftest import running_gateway, wait_until, write_config
from tests.shadow_backends import chat_app, chat_request
from tests.test_killswitch import auth
from tests.test_shadow import route

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("scope", ["route", "global"])
async def test_a_shadow_copy_is_not_sent_to_a_route_killed_while_the_primary_answered(
        tmp_path: Path, backends, scope: str) -> None:
    r2 = Recorder()
    p1 = await backends(chat_app("v1", delay=1.0))
    p2 = await backends(chat_app("v2", recorder=r2))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, compare: openai_chat}",
                                       protocol="openai", prefix="/v1"))
    kill = {"scope": scope, "abort_inflight": False, "reason": "stop everything on iris"}
    if scope == "route":
        kill["route"] = "iris"
    async with running_gateway(cfg) as g, ClientSession() as session:
        call = asyncio.create_task(session.post(g.url + "/v1/chat/completions",
                                                data=chat_request(1),
                                                headers={"content-type": "application/json"}))
        await wait_until(lambda: g.gw.inflight.count == 1)
        async with session.post(f"{g.admin}/v1/kill?wait=2s", headers=auth(), json=kill) as r:
            assert r.status == 200, await r.text()
        killed_at = len(r2.requests)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        async with session.post(g.url + "/v1/chat/completions", data=chat_request(2),
                                headers={"content-type": "application/json"}) as after:
            assert after.status == 503  # killed: no request after the kill is tapped
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: len(r2.requests) > killed_at, timeout=2)
    assert len(r2.requests) == killed_at, (
        f"the {scope} kill was in force (receipt), then the shadow v2 of the killed route "
        f"got a copy")


async def test_a_noise_copy_is_not_sent_to_the_primary_version_killed_while_it_answered(
        tmp_path: Path, backends) -> None:
    r1 = Recorder()
    p1 = await backends(chat_app("v1", recorder=r1, delay=1.0))
    p2 = await backends(chat_app("v2"))
    shadow = "{version: v2, sample: 1.0, compare: openai_chat, noise: {sample: 1.0}}"
    cfg = write_config(tmp_path, route(p1, p2, shadow, protocol="openai", prefix="/v1"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        call = asyncio.create_task(session.post(g.url + "/v1/chat/completions",
                                                data=chat_request(1),
                                                headers={"content-type": "application/json"}))
        await wait_until(lambda: g.gw.inflight.count == 1 and len(r1.requests) == 1)
        async with session.post(f"{g.admin}/v1/kill?wait=2s", headers=auth(), json={
                "scope": "version", "route": "iris", "version": "v1",
                "abort_inflight": False, "reason": "v1 returns garbage"}) as r:
            assert r.status == 200, await r.text()
        killed_at = len(r1.requests)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: len(r1.requests) > killed_at, timeout=3)
    assert len(r1.requests) == killed_at, (
        "v1 was killed (receipt in hand) while it answered; the shadow's noise copy then "
        "sent the request to v1 again")
