"""A pooled backend connection whose close has arrived but not been processed yet (its EOF
read, its `connection_lost` still to come) against a real in-process gateway: it must never be
handed to the next request (a POST on it cannot be sent again: a 502)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def _recv_until(sock: socket.socket, end: bytes, have: bytes = b"") -> bytes:
    loop = asyncio.get_running_loop()
    data = have
    while end not in data:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


async def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """One Content-Length answer off a kept-alive connection: (status, body)."""
    data = await _recv_until(sock, b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    loop = asyncio.get_running_loop()
    while len(body) < length:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), body


async def _serve_new_connections(listener: socket.socket, seen: list[bytes]) -> None:
    """Answer every request of every further connection (a fresh one after the close)."""
    loop = asyncio.get_running_loop()
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        with conn:
            data = b""
            with contextlib.suppress(ConnectionError, TimeoutError):
                while True:
                    data = await _recv_until(conn, b"\r\n\r\n", data)
                    head, _, data = data.partition(b"\r\n\r\n")
                    seen.append(head.split(b"\r\n")[0])
                    await loop.sock_sendall(conn, OK)


async def test_a_pooled_connection_whose_close_has_arrived_is_not_handed_out(
        tmp_path: Path) -> None:
    """The backend answers with keep-alive, then closes its connection as the client sends
    its next request, a POST: the close (EOF) and the POST reach the gateway in one turn of
    its loop, the close first. Before: the connection, pooled and not yet known closed
    (`connection_lost` comes a turn later), carried the POST, which met the close with no
    answer and, not safe to send twice, was answered 502. Expected: a connection whose EOF
    has arrived is never reused; the POST goes out on a new connection and is answered."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    seen: list[bytes] = []
    server: asyncio.Task[None] | None = None
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    try:
        async with running_gateway(cfg) as g:
            client = socket.create_connection(("127.0.0.1", g.gw.data_addr[1]))
            client.setblocking(False)
            try:
                await loop.sock_sendall(client, b"GET /v2/models/iris/ready HTTP/1.1\r\n"
                                                b"Host: x\r\n\r\n")
                backend, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
                backend.setblocking(False)
                with backend:
                    await _recv_until(backend, b"\r\n\r\n")
                    backend.sendall(OK)
                    assert await _answer(client) == (200, b"{}")  # pooled by now
                    server = loop.create_task(_serve_new_connections(listener, seen))
                    # no await between these two: both arrive before the gateway's loop polls
                    backend.shutdown(socket.SHUT_WR)
                    client.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\nContent-Length: 2"
                                   b"\r\n\r\n{}")
                    status, body = await _answer(client)
                assert (status, body) == (200, b"{}"), body
                assert seen == [b"POST /v2/models/iris/infer HTTP/1.1"]
            finally:
                client.close()
    finally:
        if server is not None:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
        listener.close()
