"""A request routed before a version kill that leaves no version gets the route's
`fallback`, as a request routed a moment later does (README: "a version kill moves that
version's traffic to the others, or to the fallback when none is left"); it got 503
`killed` at first. From a second hostile review.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)


async def test_a_request_routed_before_the_last_version_is_killed_gets_the_fallback(
        tmp_path: Path, backends) -> None:
    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          fallback: {{status: 200, json: {{answer: cached}}}}
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """))
    async with running_gateway(cfg) as g, ClientSession() as session:
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       int(g.url.rsplit(":", 1)[1]))
        try:
            writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n")
            await writer.drain()
            await wait_until(lambda: g.gw.inflight.count == 1)
            async with session.post(f"{g.admin}/v1/kill?wait=2s", headers=auth(), json={
                    "scope": "version", "route": "iris", "version": "v1",
                    "reason": "v1 returns garbage"}) as r:
                assert r.status == 200, await r.text()
            writer.write(b"2\r\n1}\r\n0\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        async with session.post(g.url + "/v2/models/iris/infer", data=b'{"a":1}') as after:
            after_status, after_body = after.status, await after.json()
    assert not rec.requests
    # a request routed after the kill: the route's fallback
    assert (after_status, after_body) == (200, {"answer": "cached"})
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert b" 200 " in status_line and json.loads(body) == {"answer": "cached"}, (
        f"routed before the kill: {status_line.decode()} {body.decode()}, where a request "
        f"routed after it gets the fallback")
