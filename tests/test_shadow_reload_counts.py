"""A reload that changes the comparison settings starts the counts afresh (README); a copy of
a request routed before it, finishing after, must not wipe what the new settings counted.
(Hostile shadow review: the per-route tally was replaced whenever a copy's settings were
not the tally's, so each such copy threw away the new settings' counts, and the instance
published a blob of the old settings, which the report leaves out: 'compared 0'. With
long streams in flight at a reload this repeated for minutes.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import running_gateway, wait_until, write_config
from tests.test_shadow import report, route, settled

pytestmark = pytest.mark.timeout(60)


def _app() -> web.Application:
    async def answer(req: web.Request) -> web.Response:
        await req.read()
        if req.path.endswith("/slow"):
            await asyncio.sleep(2.0)
        return web.json_response({"path": req.path})

    a = web.Application()
    a.router.add_route("*", "/{tail:.*}", answer)
    return a


async def test_a_copy_of_the_old_settings_does_not_wipe_the_new_counts(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(_app()), await backends(_app())
    old = "{version: v2, sample: 1.0, compare: json}"
    new = "{version: v2, sample: 1.0, compare: {json: {ignore: [id]}}}"
    cfg = write_config(tmp_path, route(p1, p2, old, protocol="http", prefix="/v1"))
    async with running_gateway(cfg) as g:
        slow = asyncio.create_task(session.post(g.url + "/v1/slow", data=b"{}"))
        await wait_until(lambda: g.gw.inflight.count == 1, 5)
        digest = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(p1, p2, new, protocol="http",
                                                    prefix="/v1"), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != digest, 10)
        for _ in range(5):
            async with session.post(g.url + "/v1/fast", data=b"{}") as r:
                assert r.status == 200
        await settled(session, g.admin, 5)
        resp = await asyncio.wait_for(slow, 10)  # its copy: the old settings
        assert resp.status == 200
        resp.release()
        await wait_until(lambda: g.gw.mirror.inflight.get("iris") == 0, 10)
        rep = await report(session, g.admin)
        assert rep["compared"] == 5 and rep["copies"]["sent"] == 5, rep
