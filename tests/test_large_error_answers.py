"""Error answers that could say "model not ready" (CONTRACT §5.6) but are large, on the fast
path (a pooled connection, the answer told to the flight from the upstream callbacks): they
are forwarded as they come, never held until the idle timeout, and the connection they
leave in the pool can carry the next request (reading from it is not left paused); so can
one pooled after a slow client made the gateway pause reading from the backend."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.dataplane.answerparsing import HIGH_WATER
from tests.conftest import running_gateway, wait_until, write_config

IDLE = 3.0  # the routes' idle timeout: a stalled answer would take this long, then 504

CASES = {  # protocol: (path, status)
    "v2": ("/v2/models/iris/infer", 400),
    "openai": ("/v1/chat/completions", 404),
}


def _route(protocol: str, port: int) -> str:
    prefix = "/v2/models/iris" if protocol == "v2" else "/v1"
    return f"""\
- name: r
  match: {{path_prefix: {prefix}}}
  protocol: {protocol}
  stable: v1
  timeouts: {{idle: {IDLE:g}s, total: 30s}}
  outlier: {{enabled: false}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
"""


@pytest.mark.parametrize("protocol", list(CASES))
async def test_a_large_error_answer_is_forwarded_not_held(
        tmp_path: Path, backends, protocol: str) -> None:
    path, status = CASES[protocol]
    big = b'{"error": "' + b"x" * (4 * HIGH_WATER) + b'"}'

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=big, content_type="application/json")

    app = web.Application()
    app.router.add_post(path, answer)
    port = await backends(app)
    cfg = write_config(tmp_path, _route(protocol, port))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        for attempt in range(3):  # the first opens the connection; the others reuse it
            t0 = time.monotonic()
            async with s.post(g.url + path, json={"model": "m"}) as r:
                body = await r.read()
                assert (r.status, len(body)) == (status, len(big)), attempt
            took = time.monotonic() - t0
            assert took < IDLE / 2, f"attempt {attempt} took {took:.2f}s (held, not streamed)"


class _TwoPartBackend:
    """Keep-alive raw backend: answers each request in turn from `answers`; an answer given
    as two parts sends the second only when `gate` is set."""

    def __init__(self, answers: list[tuple[bytes, bytes]]) -> None:
        self.answers = answers
        self.gate = asyncio.Event()
        self.connections = 0
        self.requests = 0
        self.server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                first, second = self.answers[self.requests]
                self.requests += 1
                writer.write(first)
                await writer.drain()
                if second:
                    await self.gate.wait()
                    writer.write(second)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for w in list(self._writers):
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_connection_pooled_after_reading_paused_serves_the_next_request(
        tmp_path: Path) -> None:
    """A could-be-not-ready answer whose last bytes push the gateway's buffer past its high
    water mark (reading from the backend paused) and end it in the same read: forwarded
    whole, its connection pooled. The next request on that connection must be answered."""
    path = CASES["openai"][0]
    body = b"y" * (HIGH_WATER + 1000)
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    head = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    split = HIGH_WATER - 1000
    backend = _TwoPartBackend([(ok, b""), (head + body[:split], body[split:]), (ok, b""),
                               (ok, b"")])
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, _route("openai", port))
        async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
            async def post() -> tuple[int, bytes]:
                async with s.post(g.url + path, json={"model": "m"}) as r:
                    return r.status, await r.read()

            assert await post() == (200, b"{}")  # opens the connection, pools it
            second = asyncio.ensure_future(post())  # on the pooled connection: the fast path
            waiting = g.gw.upstreams.waiting
            await wait_until(lambda: any(ex.buffered == split for ex in waiting), 10,
                             what="the first part of the large 404 buffered by the gateway")
            backend.gate.set()  # the rest arrives in one read: past the mark, and the end
            assert await asyncio.wait_for(second, 10) == (404, body)
            t0 = time.monotonic()
            assert await asyncio.wait_for(post(), 10) == (200, b"{}")
            took = time.monotonic() - t0
            assert took < IDLE / 2, f"the reused connection took {took:.2f}s to answer"
            assert backend.connections == 1  # it was the pooled connection, reused
    finally:
        with contextlib.suppress(Exception):
            await backend.stop()


async def test_a_connection_pooled_after_a_slow_client_serves_the_next_request(
        tmp_path: Path, backends) -> None:
    """A large answer to a client that stops reading: the gateway pauses reading from the
    backend; when the client reads again the rest flows (each buffered read resumes
    reading), the connection is pooled, and the next request on it is answered at once."""
    big = b"w" * (8 * 1024 * 1024)
    peers: set[object] = set()

    async def answer(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if request.query.get("big"):
            return web.Response(body=big, content_type="application/octet-stream")
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/models", answer)
    port = await backends(app)
    cfg = write_config(tmp_path, _route("openai", port))
    async with running_gateway(cfg) as g:
        gw_port = int(g.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw_port, limit=2 ** 16)
        try:
            writer.write(b"GET /v1/models?big=1 HTTP/1.1\r\nHost: x\r\n\r\n")

            def paused() -> bool:
                return any(getattr(h, "exchange", None) is not None and h.exchange.read_paused
                           for h in g.gw.inflight.handles)

            await wait_until(paused, 10, what="the gateway to pause reading from the backend")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: %d\r\n" % len(
                big) in head.lower()
            assert await asyncio.wait_for(reader.readexactly(len(big)), 10) == big
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        await wait_until(lambda: any(p.idle for p in g.gw.upstreams.pools.values()), 5,
                         what="the backend connection pooled")
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            async with s.get(g.url + "/v1/models") as r:
                assert (r.status, await r.read()) == (200, b"{}")
            took = time.monotonic() - t0
        assert took < IDLE / 2, f"the reused connection took {took:.2f}s to answer"
        assert len(peers) == 1  # the second request went on the pooled connection
