"""What a drill reads of the running config (/v1/config: the route, `state.poll_interval`
and `instance_lease`, `drills`) never kills it with a traceback when whatever answers at the
admin address gives another shape (control/drillfleet.py): a section that is not one is
taken as empty (its defaults), a config without the route is `unknown_route`. A real HTTP
listener answers as that admin address."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillfleet import discover
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.control.drills import _seconds
from tests.test_drillreport import kill_plan

pytestmark = pytest.mark.timeout(30)

STATUS = {"routes": {"r": {"versions": {"v1": {}, "v2": {}}}},
          "instances": {"a": {"data": "http://127.0.0.1:9", "admin": "http://127.0.0.1:9"}}}


async def _discover(backends, config: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    async def status(request: web.Request) -> web.Response:
        return web.json_response(STATUS)

    async def cfg(request: web.Request) -> web.Response:
        return web.json_response({"digest": "x", "config": config})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/config", cfg)
    port = await backends(app)
    async with ClientSession() as session:
        return await discover(AdminClient(session, f"http://127.0.0.1:{port}", "t"),
                              kill_plan())


async def test_odd_config_sections_are_taken_as_empty(backends) -> None:
    fleet = await _discover(backends, {"routes": [{"name": "r"}], "state": ["poll"],
                                       "drills": "none"})
    assert fleet["state"] == {} and fleet["drills"] == {}, fleet
    fleet = await _discover(backends, {"routes": [{"name": "r"}], "state": {
        "poll_interval": "soon", "instance_lease": "later"}})
    assert _seconds(fleet["state"]["poll_interval"], 0.25) == 0.25
    assert _seconds(fleet["state"]["instance_lease"], 5.0) == 5.0


@pytest.mark.parametrize("config", ["text", {"routes": "r"}, {"routes": ["r", 1]}])
async def test_a_config_without_the_route_is_unknown_route(backends, config: Any) -> None:
    with pytest.raises(DrillApiError) as caught:
        await _discover(backends, config)
    assert caught.value.type == "unknown_route", caught.value
