"""A drill's error watch reads every instance's /metrics by the admin URL the instance
publishes (final review of 63e3f72): an answer that is not the page (421 host_not_allowed
from a loopback listener published under a host name, since the admin Host check; a 401 or
503 from whatever answers there) was parsed as a page with no traffic: the abort guard saw
none of that instance's users, and the report did not name it in unreadable_metrics."""

from __future__ import annotations

import json

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillabort import ErrorWatch

pytestmark = pytest.mark.timeout(30)


async def test_a_metrics_answer_that_is_not_200_is_unreadable(backends) -> None:
    async def refused(request: web.Request) -> web.Response:
        return web.Response(status=421, content_type="application/json", text=json.dumps(
            {"error": {"type": "host_not_allowed", "message": "this admin listener ..."}}))

    app = web.Application()
    app.router.add_get("/metrics", refused)
    url = f"http://127.0.0.1:{await backends(app)}"
    async with ClientSession() as s:
        watch = ErrorWatch(s, [url], "iris", dict, 0.1, 10, 0.01)
        assert await watch._read() == {}  # (nothing read: no address in the window)
    assert watch.unreadable == {url}
