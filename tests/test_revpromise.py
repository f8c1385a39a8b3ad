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
