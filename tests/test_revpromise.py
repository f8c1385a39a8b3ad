"""The kill and rollback promise after the session's merges, a hostile review (revpromise).
Each test failed before its fix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, black_hole, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"


async def test_a_request_routed_before_a_rollback_does_not_fail_over_to_the_version_rolled_off(
        tmp_path: Path, backends) -> None:
    """A request routed to v1 whose connect hangs (v1's host gone); meanwhile the operator
    rolls the route back to v1 (v2 is bad: acknowledged, applied). When the connect times
    out the request is undelivered and fails over: by the plan it was routed with, to v2,
    the version the rollback just took off (no spare since d0104d5, for every request
    routed after it). It must go where the route's plan now says: the fallback."""
    bad = Recorder()
    p2 = await backends(echo_app("v2", bad))
    with black_hole() as p1:
        cfg = write_config(tmp_path, _route(
            "iris", {"v1": (p1, 100), "v2": (p2, 0)},
            "  timeouts: {connect: 1500ms, total: 10s}\n"
            "  outlier: {enabled: false}\n"
            "  fallback: {status: 503, json: {busy: true}}\n"))
        async with running_gateway(cfg) as g, ClientSession() as session:
            async def infer() -> tuple[int, str | None, str | None]:
                async with session.post(g.url + INFER, data=b"{}") as r:
                    await r.read()
                    return (r.status, r.headers.get("x-killgate-version"),
                            r.headers.get("x-killgate-decision"))

            flight = asyncio.ensure_future(infer())
            await wait_until(lambda: g.gw.inflight.handles, 5)
            async with session.post(f"{g.admin}/v1/routes/iris/rollback",
                                    headers=auth("killgate:rollout killgate:read"),
                                    json={"to": "v1", "reason": "INC-2: v2 corrupts"}) as r:
                assert r.status == 200, await r.text()
            assert not flight.done()
            got = await flight
            assert not bad.requests, got
            assert got == (503, None, "fallback"), got


@pytest.mark.parametrize("steps", [False, True])
async def test_an_automatic_rollback_never_rolls_back_to_a_killed_stable(
        tmp_path: Path, backends, steps: bool) -> None:
    """The operator kills the stable v1 (it is the bad one): the canary v2 takes all of the
    route's traffic. Judged against no stable traffic (baseline: no errors), a few of v2's
    errors under the whole load failed the analysis, and the automatic rollback latched the
    route to v1, killed, with v2 at 0 and no spare (d0104d5): the route answered only its
    fallback, an outage made by the automation over the operator's kill. No automatic
    rollback goes to a killed stable: the canary goes on serving (the verdict says why); a
    progressive rollout is held by the kill (README), never promoted."""
    from aiohttp import web

    from tests.test_killswitch import kill

    async def v2(req: web.Request) -> web.Response:
        await req.read()
        return web.json_response({"v": 2}, status=500 if req.headers.get("x-fail") else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", v2)
    p1, p2 = await backends(echo_app("v1")), await backends(app)
    cfg = write_config(tmp_path, _route(
        "iris", {"v1": (p1, 90), "v2": (p2, 10)},
        "  analysis: {window: 5s, interval: 200ms, min_requests: 5"
        + (", steps: [10, 100], step_interval: 200ms" if steps else "") + "}\n"
        "  outlier: {enabled: false}\n"
        "  fallback: {status: 503, json: {busy: true}}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        await kill(session, g.admin, scope="version", route="iris", version="v1")
        for i in range(20):
            async with session.post(g.url + INFER, data=b"{}",
                                    headers={"x-fail": "1"} if i % 5 == 0 else {}) as r:
                await r.read()
                assert r.headers.get("x-killgate-version") == "v2"
        await wait_until(lambda: (v := g.gw.rollout.verdicts.get("iris")) is not None
                         and v.status == "failed", 5, what="the failed verdict")
        await asyncio.sleep(0.5)  # (rounds after it: each would have rolled back)
        assert "iris" not in g.gw.holder.doc.overrides, g.gw.holder.doc.overrides
        async with session.post(g.url + INFER, data=b"{}") as r:
            assert (r.status, r.headers.get("x-killgate-version")) == (200, "v2")
        assert g.gw.rollout.recent["iris"][-1]["held"].startswith("no automatic rollback to v1")
        if steps:
            prog = g.gw.holder.doc.progress.get("iris") or {}
            assert prog.get("state") != "done" and prog.get("held") in (None, "version:v1"), prog
