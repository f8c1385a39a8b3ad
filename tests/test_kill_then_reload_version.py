"""A request routed to v2 before v2's kill, still reading its body, then a reload that
drops v2 from a route that stays (an operator's clean-up after the incident): the kill in
force still holds, and the request never reaches v2. (From a third hostile review: the
kills were read from the new plan, which had no entry for v2.)
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)


def routes(p1: int, p2: int, with_v2: bool) -> str:
    v2 = f'    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 100}}\n' if with_v2 else ""
    w1 = 0 if with_v2 else 100
    return textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: {w1}}}
        """) + v2


async def test_a_request_routed_before_a_version_kill_is_not_sent_after_a_reload_drops_it(
        tmp_path: Path, backends) -> None:
    r2 = Recorder()
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2", r2))
    cfg = write_config(tmp_path, routes(p1, p2, True))
    async with running_gateway(cfg) as g, ClientSession() as session:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
        try:
            writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n")
            await writer.drain()
            await wait_until(lambda: g.gw.inflight.count == 1)
            async with session.post(f"{g.admin}/v1/kill?wait=2s", headers=auth(), json={
                    "scope": "version", "route": "iris", "version": "v2",
                    "abort_inflight": False, "reason": "v2 leaks data"}) as r:
                assert r.status == 200, await r.text()
            old = g.gw.loaded.digest
            cfg.write_text(write_config(tmp_path, routes(p1, p2, False),
                                        name="next.yaml").read_text())
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.digest != old, 10)
            writer.write(b"2\r\n1}\r\n0\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert not r2.requests, (
        f"v2 was killed (receipt in hand), a reload dropped v2 from the route, and the "
        f"request routed to v2 before the kill reached v2: {head.decode(errors='replace')}")
