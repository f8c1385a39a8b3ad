"""Making room at `server.max_connections` (listener.py `Listener.full`, protocol.py
`HttpProtocol.spare`), hostile review: a connection whose last answer is still being
taken by its client has a request in progress; closing it to make room cuts the answer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import running_gateway, two_versions, wait_until, write_config

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
