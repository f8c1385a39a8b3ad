"""Making room at `server.max_connections` (listener.py `Listener.full`, protocol.py
`HttpProtocol.spare`), hostile review: a connection whose last answer is still being
taken by its client has a request in progress; closing it to make room cuts the answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from aiohttp import web

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(60)

BIG = 1 << 20


def big_app() -> web.Application:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", big)
    return app


async def test_an_answer_still_being_taken_is_not_cut_to_make_room(tmp_path: Path,
                                                                  backends) -> None:
    p = await backends(big_app())
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra="server:\n  max_connections: 1\n  keepalive_timeout: 60s\n"
                             "  send_timeout: 30s\n")
    loop = asyncio.get_running_loop()
    async with running_gateway(cfg) as g:
        host, port = g.url.removeprefix("http://").rsplit(":", 1)
        listener = g.gw._listener
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        other: socket.socket | None = None
        try:
            await loop.sock_connect(s, (host, int(port)))
            await wait_until(lambda: len(listener.connections) == 1, 5, what="accepted")
            # a slow link: little of the answer fits in the kernel's buffers on the way
            for c in listener.connections:
                c.transport.get_extra_info("socket").setsockopt(  # type: ignore[attr-defined]
                    socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            await loop.sock_sendall(s, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n\r\n")

            def handed_over_not_taken() -> bool:  # the answer is written, not all sent
                return any(not c.queue and c.transport is not None  # type: ignore[attr-defined]
                           and c.transport.get_write_buffer_size()  # type: ignore[attr-defined]
                           for c in listener.connections)

            got = b""
            deadline = loop.time() + 20
            while not handed_over_not_taken():  # take it slowly until all is handed over
                assert loop.time() < deadline, "the answer was never all handed over"
                got += await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
                assert len(got) < BIG, "the answer was taken whole before the check"
                await asyncio.sleep(0.001)
            # a new client at the cap: the one connection is still sending its answer
            other = socket.create_connection((host, int(port)))
            other.setblocking(False)
            await wait_until(lambda: g.gw.metrics.get(
                "killgate_connections_refused_total", ("connections",)) == 1
                or g.gw.metrics.get("killgate_connections_reclaimed_total") == 1, 10,
                what="the new connection decided")
            while True:
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), 5)
                except ConnectionError:
                    break
                if not chunk:
                    break
                got += chunk
                head, _, body = got.partition(b"\r\n\r\n")
                if len(body) >= BIG:
                    break
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert len(body) == BIG, f"the answer was cut at {len(body)} of {BIG} bytes"
            assert g.gw.metrics.get("killgate_connections_reclaimed_total") == 0
        finally:
            s.close()
            if other is not None:
                other.close()


async def test_small_bodies_trickling_in_give_way_at_the_cap(tmp_path: Path, backends) -> None:
    """A connection whose small body (read whole before its request goes on) came a byte at
    a time had a request in progress, so `max_connections` of them, each within
    body_timeout, locked every new client out (refused at accept). One arriving slower
    than the pace that has it whole by its deadline now gives way, as a head still arriving
    does; one on pace keeps its place, and gets its answer."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra="server:\n  max_connections: 2\n  body_timeout: 20s\n")
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        listener = g.gw._listener
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(b"POST /v2/models/iris/slow HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 60000\r\n\r\nx")  # 1 byte of 60000: behind pace
        await wait_until(lambda: len(listener.connections) == 1 and all(
            c.queue for c in listener.connections), 5, what="the slow head")  # type: ignore[attr-defined]
        on_r, on_w = await asyncio.open_connection("127.0.0.1", port)
        on_w.write(b"POST /v2/models/iris/on HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: 10\r\n\r\n123456789")  # 9 of 10: on pace for 18 s
        await wait_until(lambda: len(listener.connections) == 2 and all(
            c.queue for c in listener.connections), 5, what="both heads")  # type: ignore[attr-defined]
        # (20 s for 60000 bytes: 3 KB/s; the other's 9 of 10 bytes are on pace for 18 s)
        await wait_until(lambda: sum(c.spare() is not None for c in listener.connections) == 1,
                         5, what="the slow body behind its pace")
        new_r, new_w = await asyncio.open_connection("127.0.0.1", port)
        try:
            new_w.write(b"GET /v2/models/iris/new HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = await read_answer(new_r, 5)
            assert status == 200, "the new client was locked out"
            assert g.gw.metrics.get("killgate_connections_reclaimed_total") == 1
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(slow_r.read(), 5) == b""  # it gave way
            on_w.write(b"0")  # the on-pace body's last byte: answered
            status, _, body = await read_answer(on_r, 5)
            assert status == 200 and b'"path": "/v2/models/iris/on"' in body
        finally:
            for w in (slow_w, on_w, new_w):
                w.close()
