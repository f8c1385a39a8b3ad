"""A small answer cut after its head, on the slow path (a new backend connection) and on the
fast path (a pooled one), against a real in-process gateway: both paths hold a small answer
until it is whole, so both give the same clean error, never a truncated 200."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.backends import RawServer
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import error_type

pytestmark = pytest.mark.timeout(30)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
#: a small answer's head and the first 10 of its 100 bytes; then the backend closes
CUT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
       + b"x" * 10)


class CutAfterHead(RawServer):
    """Answers every request of a kept-alive connection whole, or (`cut`) with a head and
    part of its body, then closes the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            await reader.readuntil(b"\r\n\r\n")
            if self.cut:
                writer.write(CUT)
                await writer.drain()
                return  # (closed by RawServer)
            writer.write(OK)
            await writer.drain()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
               ) -> tuple[int, bytes, bool]:
    """One GET on a kept-alive connection: status, body, and whether the body was whole."""
    writer.write(b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    try:
        body = await asyncio.wait_for(reader.readexactly(length), 10)
    except asyncio.IncompleteReadError as exc:
        return int(head.split()[1]), exc.partial, False
    except ConnectionError:
        return int(head.split()[1]), b"", False
    return int(head.split()[1]), body, True


async def test_a_small_answer_cut_after_its_head_is_the_same_error_on_both_paths(
        tmp_path: Path) -> None:
    """Before: on the slow path (no idle pooled connection: the first request to a backend,
    or after a failure) a small answer's head was forwarded as soon as it came, so a backend
    that cut (or hung) after the head gave the client a 200 and a truncated body, where the
    fast path holds a small answer until it is whole and gives a clean 502 (504 for a hang;
    a retry where the route allows). Expected: the same 502 `upstream_failed` on both
    paths; whole answers still pass on both."""
    backend = CutAfterHead()
    port = await backend.start()
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    try:
        async with running_gateway(cfg) as g:
            pool_key = ("http", "127.0.0.1", port)
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                backend.cut = True  # slow path: no connection to this backend yet
                slow = await _get(reader, writer)
                assert slow[0] == 502 and slow[2] and error_type(slow[1]) == "upstream_failed", (
                    f"slow path: {slow}")
                backend.cut = False  # a whole answer on a new connection, which is pooled
                assert await _get(reader, writer) == (200, b"{}", True)
                assert len(g.gw.upstreams.pools[pool_key].idle) == 1
                backend.cut = True  # fast path: on the pooled connection
                fast = await _get(reader, writer)
                assert fast == slow, f"fast path: {fast}; slow path: {slow}"
                assert backend.connections == 2
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    finally:
        await backend.stop()
