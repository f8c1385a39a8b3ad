"""A request routed before a route (or global) kill, then a reload that removes the route
(an operator's clean-up after the incident): the kills in force still hold, and the request
is answered 503 killed; the first fix let a request whose route was gone go on. From a
second hostile review.
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


def routes(p_bad: int, p_other: int, with_bad: bool) -> str:
    bad = textwrap.dedent(f"""\
        - name: bad
          match: {{path_prefix: /v2/models/bad}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p_bad}", weight: 100}}
        """) if with_bad else ""
    return bad + textwrap.dedent(f"""\
        - name: other
          match: {{path_prefix: /v2/models/other}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p_other}", weight: 100}}
        """)


@pytest.mark.parametrize("scope", ["route", "global"])
async def test_a_request_routed_before_a_kill_is_not_sent_after_a_reload_removes_its_route(
        tmp_path: Path, backends, scope: str) -> None:
    rec = Recorder()
    p_bad, p_other = await backends(echo_app("bad", rec)), await backends(echo_app("other"))
    cfg = write_config(tmp_path, routes(p_bad, p_other, True))
    kill = {"scope": scope, "abort_inflight": False, "reason": "bad answers"}
    if scope == "route":
        kill["route"] = "bad"
    async with running_gateway(cfg) as g, ClientSession() as session:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
        try:
            writer.write(b"POST /v2/models/bad/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n")
            await writer.drain()
            await wait_until(lambda: g.gw.inflight.count == 1)
            async with session.post(f"{g.admin}/v1/kill?wait=2s", headers=auth(),
                                    json=kill) as r:
                assert r.status == 200, await r.text()
            old = g.gw.loaded.digest
            cfg.write_text(write_config(tmp_path, routes(p_bad, p_other, False),
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
    status_line = answer.split(b"\r\n", 1)[0]
    assert not rec.requests, (
        f"the {scope} kill's receipt was in hand, then a reload removed the route, and the "
        f"request routed before the kill reached the killed route's backend: {status_line!r}")
