"""A kill that cuts an answer already whole at the gateway (behind a slow client, or as
the slow path resumes): the answer is cut, never ended like a success with its tail
missing (CONTRACT §3), and a sized one never leaves the connection out of step. A first
try at dropping buffered bytes on a kill did both (a second hostile review).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(60)

PIECE = b"0123456789abcdef" * 4096  # 64 KiB
TAIL = b"t" * 32768


def big_chunked_app(full: asyncio.Event, sent: list[int]) -> web.Application:
    """Writes 64 KiB pieces until `full` is set (the gateway waits for its client), then a
    32 KiB tail and the end: the whole answer is then at the gateway."""

    async def handler(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        while not full.is_set():
            await resp.write(PIECE)
            sent[0] += len(PIECE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(full.wait(), 0.005)
        await resp.write(TAIL)
        sent[0] += len(TAIL)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """The body of a chunked message, and whether it ended with its last-chunk."""
    out = bytearray()
    i = 0
    while True:
        j = raw.find(b"\r\n", i)
        if j < 0:
            return bytes(out), False
        size = int(raw[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out), raw[j + 2:j + 4] == b"\r\n"
        if len(raw) < j + 2 + size + 2:
            out += raw[j + 2:j + 2 + size]
            return bytes(out), False
        out += raw[j + 2:j + 2 + size]
        i = j + 2 + size + 2


def _flight(g: Any) -> Any:
    """The one request in flight in the gateway `g`, if any."""
    return next(iter(g.gw.inflight.handles), None)


async def _kill_once_whole_behind_the_client(g: Any, session: ClientSession) -> None:
    """Once the answer is whole at the gateway, part of it buffered there while the client
    reads nothing: a route kill that cuts it."""
    await wait_until(lambda: (f := _flight(g)) is not None and f.exchange is not None
                     and f.exchange.complete and f.exchange.chunks
                     and f.req.conn.write_paused, timeout=10)
    await kill(session, g.admin, scope="route", route="iris", reason="bad answers")


async def test_a_kill_cutting_a_complete_answer_behind_a_slow_client_ends_it_cleanly(
        tmp_path: Path, backends) -> None:
    full = asyncio.Event()
    sent = [0]
    port = await backends(big_chunked_app(full, sent))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    async with running_gateway(cfg) as g, ClientSession() as session:
        gw_port = int(g.url.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", gw_port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=8192)
        try:
            writer.write(b"GET /v2/models/iris/big HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
            got = bytearray()

            flight = functools.partial(_flight, g)

            # this client reads nothing: the gateway's writes to it pause
            await wait_until(lambda: (f := flight()) is not None and f.exchange is not None
                             and f.req.conn.write_paused, timeout=20)
            full.set()  # the backend ends its answer: it is whole at the gateway, its tail
            # buffered there while the gateway waits for this client to read
            await _kill_once_whole_behind_the_client(g, session)
            with contextlib.suppress(ConnectionError):
                while chunk := await asyncio.wait_for(reader.read(65536), 10):
                    got += chunk
            await wait_until(lambda: g.gw.inflight.count == 0)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head, _, rest = bytes(got).partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0]
    body, clean_end = dechunk(rest)
    # either the whole answer, or an incomplete one: never a clean end with bytes missing
    size = sent[0]
    assert not (clean_end and len(body) < size), (
        f"the kill dropped {size - len(body)} bytes of the answer and the stream was ended "
        f"as a success (last-chunk sent, {len(body)} of {size} bytes)")


async def test_a_kill_of_an_answer_already_whole_at_the_gateway_is_read_as_its_clean_end() -> None:
    """The same, without sockets (tests/test_upstream.py's fake transport): the answer is
    complete and buffered; `Handle.abort` drops the buffer, and the next `read()` is b""
    (the clean end the stream forwards as a success) instead of the kill."""
    from gateway.dataplane.inflight import Aborted, Handle
    from tests.test_upstream import exchange, feed

    ex, _tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0)
    await ex.read_head()
    ex.data_received(b"5\r\nhello\r\n0\r\n\r\n")
    assert ex.complete and ex.chunks  # whole at the gateway, not yet forwarded
    h = Handle("r")
    h.exchange = ex
    h.abort(Aborted("killed", "route"))
    try:
        got = await ex.read()
    except Aborted:
        return  # the kill (expected), or the whole answer below; never a clean end alone
    assert got == b"hello", (
        f"after the kill, read() gave {got!r}: the stream ends as if the answer were whole")


async def test_a_kill_landing_as_a_small_answer_arrives_answers_200_with_an_empty_body(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slow path (no idle connection: the first request to a backend) awaits the head
    (`_attempt`: `read_head`), then `run` writes a complete answer with `write_complete`
    without looking at `flight.aborted`. A kill that cuts the flight after the answer's
    bytes arrived and before the task resumes (its table change in the same loop turn; here
    made certain by running the kill's `inflight.abort`, what `Inflight.on_table` runs, right
    after the backend's bytes) has dropped the body (`take_body`): the client gets
    `200` with `Content-Length: 0`, a success with its body missing. (Before the change:
    the whole answer; expected: 503 killed, as `stream` answers a flight killed before its
    first byte went out.)"""
    from gateway.dataplane.exchange import Exchange

    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    async with running_gateway(cfg) as g, ClientSession() as session:
        original = Exchange.data_received
        armed = [True]

        def data_received(self: Exchange, data: bytes) -> None:
            original(self, data)
            if armed[0] and self.complete and self.chunks:
                armed[0] = False
                g.gw.inflight.abort(lambda h: "route")  # a route kill's cut, this loop turn

        monkeypatch.setattr(Exchange, "data_received", data_received)
        async with session.post(g.url + "/v2/models/iris/infer", data=b'{"x": 1}') as resp:
            status, body = resp.status, await resp.read()
            length = resp.headers.get("content-length")
        assert not armed[0], "the kill did not land"
    assert not (status == 200 and body == b""), (
        f"killed once the answer was in: {status} with Content-Length {length} and no body")


SIZED_P = 256 * 1024
SIZED_TAIL = 32 * 1024


def sized_app(start: asyncio.Event, go: asyncio.Event) -> web.Application:
    """A sized answer (Content-Length: 288 KiB, streamed: over HIGH_WATER): its head, 256 KiB
    once `start` is set, then its last 32 KiB when `go` is set."""

    async def handler(req: web.Request) -> web.StreamResponse:
        if req.path.endswith("/small"):
            return web.json_response({"small": True})
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.content_length = SIZED_P + SIZED_TAIL
        await resp.prepare(req)
        await start.wait()
        await resp.write(b"p" * SIZED_P)
        await go.wait()
        await resp.write(b"t" * SIZED_TAIL)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_kill_cutting_a_whole_sized_answer_puts_the_next_answer_inside_its_body(
        tmp_path: Path, backends) -> None:
    """The sized form of the same: the stream's `read()` gives b"" after the kill, `req.end`
    ends the answer short of its Content-Length and keeps the connection, and the next
    pipelined answer (the 503 of the route killed) is written into the bytes the client
    reads as the first answer's body: the two answers are out of step (a response desync)."""
    start, go = asyncio.Event(), asyncio.Event()
    port = await backends(sized_app(start, go))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    length = SIZED_P + SIZED_TAIL
    async with running_gateway(cfg) as g, ClientSession() as session:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", int(g.url.rsplit(":", 1)[1])))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        try:
            writer.write(b"GET /v2/models/iris/big HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /v2/models/iris/small HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()

            flight = functools.partial(_flight, g)

            await wait_until(lambda: (f := flight()) is not None and f.exchange is not None)
            # the gateway's socket toward this client: a small send buffer (as a client on a
            # slow link), so that the gateway waits for it well within the answer
            f = flight()
            f.req.conn.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            start.set()
            await wait_until(lambda: (f := flight()) is not None and f.exchange is not None
                             and f.req.conn.write_paused, timeout=10)
            go.set()
            await _kill_once_whole_behind_the_client(g, session)
            got = bytearray()
            with contextlib.suppress(ConnectionError):
                while chunk := await asyncio.wait_for(reader.read(65536), 10):
                    got += chunk
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head_end = bytes(got).find(b"\r\n\r\n") + 4
    assert b"content-length: %d" % length in bytes(got[:head_end]).lower()
    second = bytes(got).find(b"HTTP/1.1 ", head_end)
    assert second < 0 or second >= head_end + length, (
        f"the first answer (Content-Length {length}) got {second - head_end} body bytes, "
        f"then the next answer began: {bytes(got[second:second + 40])!r}, inside the "
        f"bytes the client reads as the first answer's body")
