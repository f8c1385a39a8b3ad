"""An error answer the gateway judged and then forwards as it comes (flight.py
`_forward_answer`: a not-ready-shaped 503 too large to hold, or a retried 5xx the plan answers)
is handed to a new streaming task. Until that task's first step the flight must still hold
the exchange: a kill with abort_inflight, or the client going away, can land in between (a
callback already queued on the loop), and must still cut the answer and free the backend
connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from gateway.dataplane.exchange import Exchange
from gateway.dataplane.flight import Flight
from tests.conftest import running_gateway, wait_until, write_config

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"
BIG = 300 * 1024  # more than the fast path holds whole (answerparsing.HIGH_WATER)


def _slow_503() -> web.Application:
    """A 503 whose chunked body starts with more than the gateway holds, then trickles."""

    async def handler(req: web.Request) -> web.StreamResponse:
        await req.read()
        resp = web.StreamResponse(status=503, headers={"content-type": "application/json"})
        await resp.prepare(req)
        await resp.write(b"{" + b" " * BIG)
        for _ in range(20):
            await asyncio.sleep(0.02)  # the backend's own pace
            await resp.write(b" ")
        await resp.write(b"}")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def _route(port: int, retry: str) -> str:
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  protocol: v2
  stable: v1
  outlier: {{enabled: false}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
  {retry}
"""


@pytest.fixture
def landing(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What happens right after `_forward_answer` hands a not-yet-complete answer over to
    its streaming task (before that task runs): "kill" or "gone"."""
    what: list[str] = []
    original = Flight._forward_answer

    def hooked(self: Flight, ex: Exchange) -> None:
        streaming = not ex.complete
        original(self, ex)
        if streaming and what:
            if what[0] == "kill":
                self.proxy.inflight.abort(lambda h: "version" if h is self else None)
            else:
                self.client_gone()  # (as the client's connection_lost would)
            what.append("landed")

    monkeypatch.setattr(Flight, "_forward_answer", hooked)
    yield what


# the two ways an answer is handed to a streaming task: an error answer too large to hold,
# and a retried 5xx the retry plan answers anyway
HANDED_OVER = pytest.mark.parametrize(
    "retry", ["", "retry: {retry_on: ['5xx'], attempts: 2, budget: 1}"],
    ids=["held-too-large", "retried-5xx-answered"])

@HANDED_OVER
async def test_a_kill_landing_before_the_stream_starts_still_cuts_the_answer(
        tmp_path, backends, landing: list[str], retry: str) -> None:
    port = await backends(_slow_503())
    landing.append("kill")
    async with running_gateway(write_config(tmp_path, _route(port, retry))) as g:
        async with aiohttp.ClientSession() as s, \
                s.post(g.url + INFER, data=b'{"inputs": []}') as r:
            # nothing of the answer went out yet: the killed answer (CONTRACT §3)
            assert (r.status, r.headers.get("x-killgate-decision")) == (503, "killed")
            assert (await r.json())["error"]["type"] == "killed"
        assert "landed" in landing  # (the kill came in the hand-over, not later)
        pool = g.gw.upstreams.pools[("http", "127.0.0.1", port)]
        await wait_until(lambda: g.gw.inflight.count == 0 and pool.open == 0, 5,
                         what="the killed exchange to be closed")


@HANDED_OVER
async def test_a_client_gone_before_the_stream_starts_frees_the_backend_connection(
        tmp_path, backends, landing: list[str], retry: str) -> None:
    port = await backends(_slow_503())
    landing.append("gone")
    async with running_gateway(write_config(tmp_path, _route(port, retry))) as g:
        _, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            w.write(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 14\r\n\r\n{\"inputs\": []}")
            await w.drain()
            await wait_until(lambda: "landed" in landing, 5, what="the answer handed over")
        finally:
            w.transport.abort()
        await wait_until(lambda: g.gw.inflight.count == 0, 5, what="the request to end")
        pool = g.gw.upstreams.pools[("http", "127.0.0.1", port)]
        # the backend keeps its connection open after the answer (keep-alive): only the
        # gateway closing it frees the pool's slot
        await wait_until(lambda: pool.open == 0, 3, what="the backend connection freed")
