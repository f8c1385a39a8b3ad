"""The Location rewrite costs time linear in the value: a whitelist regex first used for it
backtracked quadratically on "/?" and many "#" (30,000 took 3.6 s, on the event loop: every
other request waited). (From a sixth hostile review.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import running_gateway, write_config
from tests.test_backend_redirects_edge_cases import _located

pytestmark = pytest.mark.timeout(60)

N = 30_000  # well under the 64 KiB answer head limit


async def test_location_rewrite_is_linear_in_the_value() -> None:
    value = b"http://127.0.0.1:9/?" + b"#" * N + b" x"
    t = time.perf_counter()
    got = await _located(value, b"")
    took = time.perf_counter() - t
    assert got == value[len(b"http://127.0.0.1:9"):]  # made relative (a path on the gateway)
    assert took < 0.25, f"one Location of {len(value)} bytes took {took:.2f} s"


async def test_one_backend_location_stalls_every_other_request(
        tmp_path: Path, backends) -> None:
    """End to end: while one answer's Location is checked, a request on another route,
    to a healthy backend, waits as long (the loop is blocked)."""
    async def hostile(req: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={
            "Location": f"http://{req.host}/?" + "#" * N + " x"})

    async def healthy(req: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    bad, good = web.Application(), web.Application()
    bad.router.add_route("*", "/{tail:.*}", hostile)
    good.router.add_route("*", "/{tail:.*}", healthy)
    bad_port, good_port = await backends(bad), await backends(good)
    routes = f"""\
        - name: bad
          match: {{path_prefix: /bad}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{bad_port}"}}
        - name: good
          match: {{path_prefix: /}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{good_port}"}}
        """
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g, ClientSession(max_line_size=1 << 17,
                                                        max_field_size=1 << 17) as session:
        async def timed(path: str) -> tuple[int, float]:
            t = time.perf_counter()
            async with session.get(g.url + path, allow_redirects=False) as resp:
                await resp.read()
                return resp.status, time.perf_counter() - t

        bad_status, _ = await timed("/bad")  # warm both pools
        await timed("/ok")
        hostile_task = asyncio.create_task(timed("/bad"))
        await asyncio.sleep(0)
        good_status, good_took = await timed("/ok")
        await hostile_task
    assert bad_status == 302
    assert good_status == 200
    assert good_took < 1.0, f"a healthy request took {good_took:.2f} s behind one Location"
