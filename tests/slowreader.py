"""The slow-reader rig: an answer large enough to wait in the gateway, a client that reads it
as slowly as a test likes.

`big_app(size)`: a backend answering every path with `size` bytes; `slow_reader`: a
data-plane connection of an in-process gateway whose request is sent once the gateway's end
of it has a 4 KiB send buffer (and the client's a `rcvbuf` receive buffer), so that the
answer waits in the gateway's transport, its writes paused, not in the kernel.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from tests.conftest import wait_until

__all__ = ["big_app", "slow_reader"]


def big_app(size: int) -> web.Application:
    async def big(req: web.Request) -> web.Response:
        return web.Response(body=b"y" * size)

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", big)
    return app


async def slow_reader(g: Any, rcvbuf: int) -> socket.socket:
    """A connection to gateway `g` (an InProcess) whose answer waits in the transport."""
    listener = g.gw._listener
    assert listener is not None
    before = set(listener.connections)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, g.gw.data_addr)
    (conn,) = await wait_until(lambda: set(listener.connections) - before, 5,
                               what="the gateway to accept")
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                      4096)
    sock.send(b"GET /v2/models/iris/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await wait_until(lambda: conn.write_paused, 5, what="the transport's buffer to fill")
    return sock
