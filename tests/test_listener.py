"""The data-plane listener over real sockets: HTTP/1.1 as clients speak it, through our own
protocol to real backends (pipelining, HEAD, 100-continue, 1xx from backends, deadlines
re-armed per request), and the fast path really taken (no Task per request)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from aiohttp import web

from gateway.dataplane import flight, proxy
from tests.backends import RawBackend, Recorder, echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config


async def _read_answer(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(r.readexactly(n), 5)


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path, backends) -> None:
    async def slow_first(req: web.Request) -> web.Response:
        if req.path.endswith("/slow"):
            await asyncio.sleep(0.3)
        return web.json_response({"path": req.path})

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", slow_first)
    p = await backends(app)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        paths = ["/v2/models/iris/slow", "/v2/models/iris/a", "/v2/models/iris/b"]
        w.write(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths))
        got = [json.loads((await _read_answer(r))[1])["path"] for _ in paths]
        w.close()
    assert got == paths  # the slow one first, though the others were ready before it


async def test_head_100_continue_and_1xx_from_a_backend(tmp_path: Path, backends) -> None:
    rec = Recorder()
    p = await backends(echo_app("v1", rec))
    early = RawBackend(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    ep = await early.start()
    routes = two_versions(p, p, 100, 0) + two_versions(ep, ep, 100, 0, name="early",
                                                       prefix="/early")
    cfg = write_config(tmp_path, routes)
    try:
        async with running_gateway(cfg) as g:
            r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            # HEAD: the backend's length, no body, and the connection stays usable
            w.write(b"HEAD /v2/models/iris/x HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head.lower()
            # 100-continue: the gateway says go when it reads the body
            w.write(b"POST /v2/models/iris/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n")
            assert await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5) == \
                b"HTTP/1.1 100 Continue\r\n\r\n"
            w.write(b"hello")
            _, body = await _read_answer(r)
            assert json.loads(body)["body"] == "hello"
            assert "expect" not in dict(rec.requests[-1]["headers"])  # hop-by-hop: ours
            # a backend's 1xx is not forwarded; its final answer is
            w.write(b"GET /early/x HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = await _read_answer(r)
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
            assert b"103" not in head and b"link" not in head.lower()
            w.close()
    finally:
        await early.stop()
    assert [q["method"] for q in rec.requests] == ["HEAD", "POST"]


async def test_the_header_deadline_is_re_armed_for_every_head(tmp_path: Path, backends) -> None:
    """A kept-alive connection that starts a second head and dribbles it is closed at
    `header_timeout` from that head's first byte, not left to the idle timeout."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra="server: {header_timeout: 400ms, keepalive_timeout: 30s}\n")
    async with running_gateway(cfg) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        w.write(b"GET /v2/models/iris/a HTTP/1.1\r\nHost: x\r\n\r\n")
        await _read_answer(r)
        await asyncio.sleep(0.6)  # idle longer than header_timeout: fine (keep-alive)
        w.write(b"GET /v2/models/iris/b HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = asyncio.ensure_future(r.read())  # b"" once the gateway closes
        for _ in range(20):  # one header line every 100 ms, never finished
            if closed.done():
                break
            try:
                w.write(b"X-Drip: 1\r\n")
                await w.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.1)
        # (closed while our bytes were still arriving: a reset is a close too)
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(closed, 5) == b""
        took = time.monotonic() - t0
        w.close()
    assert 0.3 < took < 1.5, took


async def test_the_fast_path_takes_no_task_per_request(tmp_path: Path, backends,
                                                       monkeypatch) -> None:
    """A request with its body in memory and an idle pooled connection is forwarded from the
    parser callback, and the complete answer written from the upstream callback: after the
    first request (which opens the backend connection), no coroutine runs per request."""
    spawned: list[str] = []
    real_flight, real_proxy = flight.Flight._spawn, proxy.Proxy._spawn

    def count_flight(self, coro):  # type: ignore[no-untyped-def]
        spawned.append(coro.__qualname__)
        return real_flight(self, coro)

    def count_proxy(self, coro):  # type: ignore[no-untyped-def]
        spawned.append(coro.__qualname__)
        return real_proxy(self, coro)

    monkeypatch.setattr(flight.Flight, "_spawn", count_flight)
    monkeypatch.setattr(proxy.Proxy, "_spawn", count_proxy)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        w.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await _read_answer(r)
        await wait_until(lambda: g.gw.upstreams.pools[("http", "127.0.0.1", p)].idle, 5)
        # the first: a connection to open (the flight's slow path, dataplane/slowpath.run)
        assert spawned == ["run"]
        for _ in range(200):
            w.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                    b"\r\n{}")
            head, _ = await _read_answer(r)
            assert head.startswith(b"HTTP/1.1 200")
        w.close()
    assert spawned == ["run"], spawned


async def test_a_kill_cuts_a_fast_path_request_waiting_on_its_backend(tmp_path: Path,
                                                                      backends) -> None:
    """A request forwarded on the fast path (no Task: its body in memory, a pooled
    connection) and waiting on a slow backend is cut by a kill with abort_inflight: the
    client gets the route's killed answer at once, and the backend is not blamed for it."""
    from aiohttp import ClientSession

    from tests.test_killswitch import auth

    async def slow(req: web.Request) -> web.Response:
        await req.read()
        if req.path.endswith("/slow"):
            await asyncio.sleep(3)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", slow)
    p = await backends(app)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g, ClientSession() as s:
        async with s.post(g.url + "/v2/models/iris/warm", data=b"{}") as r:
            assert r.status == 200  # a pooled connection is idle now: the next is fast path
        t0 = time.monotonic()
        waiting = asyncio.ensure_future(s.post(g.url + "/v2/models/iris/slow", data=b"{}"))
        await wait_until(lambda: g.gw.inflight.count == 1, 5, what="the request in flight")
        async with s.post(f"{g.admin}/v1/kill", headers=auth(),
                          json={"scope": "route", "route": "iris", "reason": "t"}) as r:
            assert r.status == 200
        r = await asyncio.wait_for(waiting, 5)
        body = await r.json()
        r.release()
        assert r.status == 503 and body["error"]["type"] == "killed", body
        assert time.monotonic() - t0 < 2.5  # cut, not waited out
        m = g.gw.metrics
        assert m.get("killgate_inflight_aborted_total", ("iris",)) == 1
        assert not m.get("killgate_upstream_errors_total", ("iris", "v1", "Aborted"))
        assert g.gw.holder.unhealthy == frozenset()


async def test_a_client_that_reads_no_answers_stops_getting_them(tmp_path: Path,
                                                                 backends) -> None:
    """A client sends request after request on one connection and reads none of the
    answers. Once its socket and the transport's buffer are full, no further request is
    forwarded (each answer would wait in the gateway's memory) until the client reads."""
    import socket

    hits = []

    async def big(req: web.Request) -> web.Response:
        hits.append(req.path)
        return web.Response(body=b"x" * 200_000)

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", big)
    p = await backends(app)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", g.gw.data_addr[1]))
        r, w = await asyncio.open_connection(sock=sock)
        assert g.gw._listener is not None
        buffered = 0
        for _ in range(100):  # one request at a time, as a client that never reads would
            w.write(b"GET /v2/models/iris/big HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.01)
            for conn in g.gw._listener.connections:
                assert conn.transport is not None
                buffered = max(buffered, conn.transport.get_write_buffer_size())
        # 100 answers of 200 kB (20 MB) held in the gateway's memory before the fix
        assert buffered < 1_000_000, buffered
        held = len(hits)
        assert held < 50
        for _ in range(100):  # the client reads: every request is answered, in order
            head, body = await _read_answer(r)
            assert head.startswith(b"HTTP/1.1 200") and len(body) == 200_000
        assert len(hits) == 100
        w.close()
