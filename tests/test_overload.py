"""RELIABILITY row 12: a busy backend's queue is bounded; the excess gets a fast 503.

A backend that takes 1 s per request, at most 4 connections to it and 8 requests allowed to
wait for one; 40 clients at once. The 12 admitted requests are all answered; the other 28
are refused at once with 503 `overloaded` and `Retry-After`, and are counted; nothing is
queued without bound, and the backend is not ejected for it (the limit is ours).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from tests.conftest import running_gateway, two_versions, write_config


def slow_app(delay: float, state: dict[str, int]) -> web.Application:

    async def infer(_: web.Request) -> web.Response:
        state["inflight"] += 1
        state["peak"] = max(state["peak"], state["inflight"])
        try:
            await asyncio.sleep(delay)
        finally:
            state["inflight"] -= 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


async def test_pool_overflow_is_a_fast_503(tmp_path: Path, backends, session) -> None:
    state = {"inflight": 0, "peak": 0}
    p = await backends(slow_app(1.0, state))
    # a waiting request waits for a connection at most `timeouts.connect`
    routes = two_versions(p, p, 100, 0, extra="timeouts: {connect: 5s}\n")
    cfg = write_config(tmp_path, routes, extra=(
        "server:\n  max_connections_per_backend: 4\n  max_pending_per_backend: 8\n"))
    async with running_gateway(cfg) as g:
        async def one() -> tuple[int, str, float, str | None]:
            t0 = time.monotonic()
            async with session.post(g.url + "/v2/models/iris/infer", json={"x": 1}) as r:
                body = await r.json()
                kind = body.get("error", {}).get("type", "ok")
                return r.status, kind, time.monotonic() - t0, r.headers.get("Retry-After")

        results = await asyncio.gather(*(one() for _ in range(40)))
        by = Counter((s, k) for s, k, _, _ in results)
        assert by == {(200, "ok"): 12, (503, "overloaded"): 28}, by
        refused = [t for s, _, t, _ in results if s == 503]
        assert max(refused) < 0.5, refused  # at once, not after waiting for a connection
        assert all(ra == "1" for s, _, _, ra in results if s == 503)
        assert state["peak"] == 4
        m = g.gw.metrics.render()
        assert 'kind="overflow"} 28' in m, m
        assert g.gw.holder.unhealthy == frozenset()  # not the backend's failure


async def test_inflight_limit_sheds_the_excess_at_once(tmp_path: Path, backends,
                                                       session) -> None:
    """RELIABILITY row 40: in flight is bounded; the excess gets a fast 503 + Retry-After
    and the admitted requests keep their latency."""
    state = {"inflight": 0, "peak": 0}
    p = await backends(slow_app(0.5, state))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), extra="server:\n  max_inflight: 4\n")
    async with running_gateway(cfg) as g:
        async def one() -> tuple[int, str, float]:
            t0 = time.monotonic()
            async with session.post(g.url + "/v2/models/iris/infer", json={"x": 1}) as r:
                body = await r.json()
                assert r.status == 200 or r.headers.get("Retry-After") == "1"
                return r.status, body.get("error", {}).get("type", "ok"), time.monotonic() - t0

        results = await asyncio.gather(*(one() for _ in range(20)))
        by = Counter((s, k) for s, k, _ in results)
        assert by == {(200, "ok"): 4, (503, "overloaded"): 16}, by
        assert max(t for s, _, t in results if s == 503) < 0.4
        assert max(t for s, _, t in results if s == 200) < 2.0  # 0.5 s each, not queued
        assert "killgate_requests_shed_total 16" in g.gw.metrics.render()
        async with session.post(g.url + "/v2/models/iris/infer", json={"x": 1}) as r:
            assert r.status == 200  # the limit frees as requests finish


async def test_connection_cap_closes_the_excess_fast(tmp_path: Path, backends) -> None:
    """RELIABILITY row 39: beyond `max_connections`, new connections are closed at once;
    those within the cap keep working."""
    state = {"inflight": 0, "peak": 0}
    p = await backends(slow_app(0.0, state))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra="server:\n  max_connections: 10\n")
    async with running_gateway(cfg) as g:
        host, port = g.url.removeprefix("http://").rsplit(":", 1)
        conns = [await asyncio.open_connection(host, int(port)) for _ in range(30)]
        try:
            async def closed(r: asyncio.StreamReader) -> bool:
                try:
                    return await asyncio.wait_for(r.read(1), 0.05) == b""
                except TimeoutError:
                    return False
                except ConnectionError:
                    return True

            deadline = time.monotonic() + 5
            while True:
                states = [await closed(r) for r, _ in conns]
                if states.count(True) == 20 or time.monotonic() > deadline:
                    break
            assert states.count(True) == 20, states
            assert states[:10] == [False] * 10  # the first ten were within the cap
            r, w = conns[0]
            w.write(b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"HTTP/1.1 200")
            assert "killgate_connections_refused_total 20" in g.gw.metrics.render()
        finally:
            for _, w in conns:
                w.close()
