"""A drill interrupted (Ctrl-C, SIGTERM, SIGHUP) before it opened never opens one: no
`drill.start`, no `drill.end` and no "aborted" last result (which `KillgateDrillNotPassing`
would warn of until a drill passes) for a drill the operator called off before it touched
anything. A store-loss drill's check of its store is the slow step before the open (a
connection to redis): the interrupt is delivered there. In-process gateway, real redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.admin.tokens import mint
from gateway.control.drillload import AdminClient
from gateway.control.drills import DrillRunner
from gateway.domain.drillplan import plan_from
from tests.backends import echo_app
from tests.conftest import (
    SECRET,
    RedisServer,
    running_gateway,
    write_config,
)
from tests.drillrig import call, routes
from tests.staterig import redis_section

pytestmark = pytest.mark.timeout(60)


async def test_an_interrupt_during_the_store_check_opens_no_drill(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_section(redis_server.url, "intr", poll_interval="100ms",
                          heartbeat_interval="200ms")
    async with running_gateway(write_config(tmp_path, routes(p1, p2), state=state)) as g:
        tok = mint(SECRET, "dana", "killgate:drill killgate:read", 600, "killgate",
                   "killgate-admin")
        plan = plan_from({"kind": "store_loss", "route": "iris-drill", "version": "v2",
                          "store": redis_server.url, "hold": "1s", "steady": "300ms",
                          "settle": "300ms", "instances": [g.url]})
        said: list[str] = []
        runner: DrillRunner

        async def pause(_seconds: float) -> None:
            raise AssertionError("the store must not be paused")

        async def check(_prefix: str, _instances: list[str]) -> str | None:
            runner.stop("interrupted (SIGINT)")  # (Ctrl-C while the store is checked)
            return None  # (the store is the fleet's: the drill could run)

        runner = DrillRunner(plan, session, AdminClient(session, g.admin, tok), said.append,
                             pause, check)
        report = await runner.run()
        assert report["verdict"] == "aborted", report
        assert report["id"] is None, report  # (no drill opened)
        assert "interrupted (SIGINT)" in report["reasons"][0], report
        st, out = await call(session, "GET", f"{g.admin}/v1/drills")
        assert st == 200, out
        assert (out["open"], out["history"], out["last"]) == ([], [], {}), out
        assert said == ["stopping: interrupted (SIGINT); no drill was opened"], said


async def test_an_interrupt_while_the_admin_api_hangs_ends_the_drill_at_once(
        backends, session: ClientSession) -> None:
    """The admin API does not answer (an overloaded instance, a proxy holding the
    connection): a Ctrl-C before the drill opened ended it only once the call timed out
    (--timeout, 35 s), saying "restoring" with nothing to restore."""
    asked = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        asked.set()
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/status", hang)
    port = await backends(app)
    plan = plan_from({"kind": "kill", "route": "iris-drill", "version": "v2"})
    said: list[str] = []
    runner = DrillRunner(plan, session, AdminClient(session, f"http://127.0.0.1:{port}", "t"),
                         said.append)

    async def interrupt() -> None:
        await asyncio.wait_for(asked.wait(), 10)
        runner.stop("interrupted (SIGINT)")

    t0 = time.monotonic()
    stopper = asyncio.create_task(interrupt())
    report = await asyncio.wait_for(runner.run(), 10)
    await stopper
    assert time.monotonic() - t0 < 3, report
    assert (report["id"], report["verdict"]) == (None, "aborted"), report
    assert "interrupted (SIGINT)" in report["reasons"][0], report
    assert said == ["stopping: interrupted (SIGINT); no drill was opened"], said
